//! How configuration reads a variable: [`Env`], an empty variable as unset, each error
//! naming its variable (never its value, which may be a secret); the server's and the
//! tracer's settings are both read through it.

use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;

/// The environment as configuration reads it, through a lookup function (tests pass a closure).
pub struct Env<'a>(pub &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The variable, trimmed; `None` when unset or empty.
    pub fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
    }

    /// The variable as `parse` reads it, its error naming the variable; `None` when unset.
    pub fn read<T>(
        &self,
        var: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let parsed = self.get(var).map(|text| parse(&text)).transpose();
        parsed.map_err(|reason| ConfigError::invalid(var, reason))
    }

    /// The variable parsed, or `default` when unset.
    pub fn parsed<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError> {
        self.checked(var, default, |_| true, "valid")
    }

    /// A whole number of at least 1, or `default` when unset.
    pub fn count<T: FromStr + Default + PartialOrd>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        self.checked(var, default, |n| *n > T::default(), "a whole number of at least 1")
    }

    /// The variable parsed and passing `valid` (else "'…' is not `what`"), or `default`
    /// when unset.
    fn checked<T: FromStr>(
        &self,
        var: &'static str,
        default: T,
        valid: impl Fn(&T) -> bool,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(text) => match text.parse() {
                Ok(value) if valid(&value) => Ok(value),
                _ => Err(ConfigError::invalid(var, format!("'{text}' is not {what}"))),
            },
        }
    }

    /// The value of the word given, one of `choices` ("must be a or b"), or `default` when unset.
    pub fn one_of<T: Copy>(
        &self,
        var: &'static str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(text) = self.get(var) else { return Ok(default) };
        let chosen = choices.iter().find(|(word, _)| *word == text).map(|(_, value)| *value);
        let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
        chosen.ok_or_else(|| ConfigError::invalid(var, format!("must be {}", words.join(" or "))))
    }

    /// A duration in seconds, fractions allowed; zero only if `zero_too`.
    pub fn seconds(
        &self,
        var: &'static str,
        default: u64,
        zero_too: bool,
    ) -> Result<Duration, ConfigError> {
        match self.get(var) {
            None => Ok(Duration::from_secs(default)),
            Some(text) if zero_too && text == "0" => Ok(Duration::ZERO),
            Some(text) => parse_seconds(&text).map_err(|reason| ConfigError::invalid(var, reason)),
        }
    }
}

/// A positive number of seconds, fractions allowed: `3`, `0.5`. The command line's
/// `--timeout` takes the same form.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("'{text}' is not a positive number of seconds"))
}
