//! How configuration reads a variable: [`Env`], an empty variable as unset, each error naming
//! its variable. The server's settings (config.rs) and the tracer's are both read through it.

use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;

/// The environment as configuration reads it, through a lookup function (tests pass a closure).
pub struct Env<'a>(pub &'a dyn Fn(&str) -> Option<String>);

/// A variable's value, or the error that names it.
type Parsed<T> = Result<T, ConfigError>;

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
    ) -> Parsed<Option<T>> {
        let parsed = self.get(var).map(|text| parse(&text)).transpose();
        parsed.map_err(|reason| ConfigError::invalid(var, reason))
    }

    /// The variable parsed, or `default` when unset.
    pub fn parsed<T: FromStr>(&self, var: &'static str, default: T) -> Parsed<T> {
        let parse = |text: &str| text.parse().map_err(|_| format!("'{text}' is not valid"));
        Ok(self.read(var, parse)?.unwrap_or(default))
    }

    /// A whole number of at least 1, or `default` when unset.
    pub fn count<T>(&self, var: &'static str, default: T) -> Parsed<T>
    where
        T: FromStr + Default + PartialOrd,
    {
        let count = |text: &str| match text.parse() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(format!("'{text}' is not a whole number of at least 1")),
        };
        Ok(self.read(var, count)?.unwrap_or(default))
    }

    /// The value of the word given, one of `words` ("must be a or b"), or `default` when unset.
    pub fn one_of<T: Copy>(&self, var: &'static str, default: T, words: &[(&str, T)]) -> Parsed<T> {
        let names: Vec<&str> = words.iter().map(|(word, _)| *word).collect();
        let chosen = |text: &str| match words.iter().find(|(word, _)| *word == text) {
            Some((_, value)) => Ok(*value),
            None => Err(format!("must be {}", names.join(" or "))),
        };
        Ok(self.read(var, chosen)?.unwrap_or(default))
    }

    /// A duration in seconds, fractions allowed; zero only if `zero_too`.
    pub fn seconds(&self, var: &'static str, default: u64, zero_too: bool) -> Parsed<Duration> {
        let seconds = |text: &str| match text {
            "0" if zero_too => Ok(Duration::ZERO),
            text => parse_seconds(text),
        };
        Ok(self.read(var, seconds)?.unwrap_or(Duration::from_secs(default)))
    }
}

/// A positive number of seconds, fractions allowed (`3`, `0.5`), here and in `--timeout`.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("'{text}' is not a positive number of seconds"))
}
