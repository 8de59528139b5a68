//! libpq connection strings, split exactly as libpq splits them (its `fe-connect.c`):
//! a `postgres://` / `postgresql://` URI or a `keyword=value` string becomes one list of
//! keyword/value pairs, in order. What each keyword means is db.rs's business.
//!
//! No error message quotes the input: any part of it may be a password.

/// Keyword/value pairs in the order given; where a keyword repeats, the last one wins.
pub type Pairs = Vec<(String, String)>;

/// Splits a connection string in either of libpq's two forms.
pub fn parse(text: &str) -> Result<Pairs, String> {
    match uri_body(text) {
        Some(rest) => parse_uri(rest),
        None => parse_key_values(text),
    }
}

/// What follows `postgresql://` or `postgres://`, if `text` is a URI.
fn uri_body(text: &str) -> Option<&str> {
    text.strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
}

/// `[user[:password]@][host][:port][,...][/dbname][?param1=value1&...]`, as libpq's
/// `conninfo_uri_parse_options` reads it. The credentials are there only when an `@`
/// comes before the first `/`, and they end at the first `@`; a `?` inside them is
/// part of the password. Hosts end at `:`, `/`, `?` or `,`; an IPv6 address is in
/// brackets. Every part is percent-decoded; `#` means nothing special.
fn parse_uri(uri: &str) -> Result<Pairs, String> {
    let mut pairs = Pairs::new();
    let mut rest = uri;
    if let Some(at) = rest
        .find(['@', '/'])
        .filter(|&i| rest.as_bytes()[i] == b'@')
    {
        let credentials = &rest[..at];
        rest = &rest[at + 1..];
        let (user, password) = match credentials.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (credentials, None),
        };
        if !user.is_empty() {
            pairs.push(("user".into(), decode(user, "the user name")?));
        }
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            pairs.push(("password".into(), decode(password, "the password")?));
        }
    }

    let (mut hosts, mut ports) = (String::new(), String::new());
    let terminator = loop {
        let (host, after) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let end = bracketed
                    .find(']')
                    .ok_or("an IPv6 host address has no closing ']'")?;
                if end == 0 {
                    return Err("an IPv6 host address is empty".into());
                }
                let after = &bracketed[end + 1..];
                if !matches!(after.bytes().next(), None | Some(b':' | b'/' | b'?' | b',')) {
                    return Err("an IPv6 host address is followed by something other \
                                than ':', '/', '?' or ','"
                        .into());
                }
                (&bracketed[..end], after)
            }
            None => rest.split_at(rest.find([':', '/', '?', ',']).unwrap_or(rest.len())),
        };
        hosts.push_str(host);
        rest = after;
        if let Some(after_colon) = rest.strip_prefix(':') {
            let end = after_colon
                .find(['/', '?', ','])
                .unwrap_or(after_colon.len());
            ports.push_str(&after_colon[..end]);
            rest = &after_colon[end..];
        }
        match rest.as_bytes().first() {
            Some(b',') => {
                rest = &rest[1..];
                hosts.push(',');
                ports.push(',');
            }
            other => break other.copied(),
        }
    };
    if !hosts.is_empty() {
        pairs.push(("host".into(), decode(&hosts, "the host")?));
    }
    if !ports.is_empty() {
        pairs.push(("port".into(), decode(&ports, "the port")?));
    }

    if terminator == Some(b'/') {
        let path = &rest[1..];
        let end = path.find('?').unwrap_or(path.len());
        if end > 0 {
            pairs.push(("dbname".into(), decode(&path[..end], "the database name")?));
        }
        rest = &path[end..];
    }
    if let Some(query) = rest.strip_prefix('?') {
        for (n, param) in query.split('&').enumerate().filter(|(_, p)| !p.is_empty()) {
            let ordinal = n + 1;
            let (key, value) = param
                .split_once('=')
                .ok_or_else(|| format!("URI query parameter {ordinal} has no '=' (key=value)"))?;
            if value.contains('=') {
                return Err(format!(
                    "URI query parameter {ordinal} has more than one '=' (percent-encode it as %3D)"
                ));
            }
            let key = decode(key, "a query parameter's name")?;
            let value = decode(value, "a query parameter's value")?;
            // libpq, for JDBC's sake: ssl=true means sslmode=require.
            match (key.as_str(), value.as_str()) {
                ("ssl", "true") => pairs.push(("sslmode".into(), "require".into())),
                _ => pairs.push((key, value)),
            }
        }
    }
    Ok(pairs)
}

/// libpq's percent-decoding: `%` and two hex digits, nothing else; `%00` refused; `+`
/// stays a plus. `what` names the part in an error, never its text.
fn decode(text: &str, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .filter(|_| bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
            .ok_or_else(|| format!("{what} holds an invalid percent-encoding"))?;
        if hex == 0 {
            return Err(format!("{what} holds %00, which libpq forbids"));
        }
        out.push(hex);
        i += 3;
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

/// `keyword = value ...`, as libpq's `conninfo_parse` reads it: blanks around `=` are
/// skipped; a value ends at a blank unless quoted with `'…'`; `\` escapes the next
/// character, quoted or not.
fn parse_key_values(text: &str) -> Result<Pairs, String> {
    let mut pairs = Pairs::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let ordinal = pairs.len() + 1;
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_ascii_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.next_if(|c| *c == '=').is_none() {
            // The word is not shown: it may be the rest of a password with a blank in it.
            return Err(format!(
                "word {ordinal} has no '=' after it (a value with blanks must be quoted: \
                 password='a b')"
            ));
        }
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|c| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("value {ordinal} has no closing quote")),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(&'static str, String)> {
        let known = [
            "user", "password", "host", "port", "dbname", "sslmode", "x", "options",
        ];
        parse(text)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (*known.iter().find(|n| **n == k).expect("a known key"), v))
            .collect()
    }

    fn p(k: &'static str, v: &str) -> (&'static str, String) {
        (k, v.to_owned())
    }

    #[test]
    fn a_question_mark_in_the_password_belongs_to_the_password() {
        assert_eq!(
            pairs("postgresql://u:a?b@host/db?sslmode=require"),
            [
                p("user", "u"),
                p("password", "a?b"),
                p("host", "host"),
                p("dbname", "db"),
                p("sslmode", "require"),
            ]
        );
    }

    #[test]
    fn credentials_need_an_at_sign_before_the_first_slash() {
        // An '@' in the query is not a user name designator.
        assert_eq!(
            pairs("postgres://host/db?x=me@corp"),
            [p("host", "host"), p("dbname", "db"), p("x", "me@corp")]
        );
        // The first '@' ends the credentials: a second one is the host's.
        assert_eq!(
            pairs("postgres://u:p%40ss@h"),
            [p("user", "u"), p("password", "p@ss"), p("host", "h")]
        );
    }

    #[test]
    fn several_hosts_ipv6_and_ports() {
        assert_eq!(
            pairs("postgresql://[::1]:5433,h2:5434,h3/d"),
            [
                p("host", "::1,h2,h3"),
                p("port", "5433,5434,"),
                p("dbname", "d"),
            ]
        );
        assert!(parse("postgres://[::1/d").is_err());
        assert!(parse("postgres://[]/d").is_err());
        assert!(parse("postgres://[::1]x/d").is_err());
    }

    #[test]
    fn percent_decoding_is_strict_and_plus_stays_a_plus() {
        assert_eq!(
            pairs("postgres://u:a%2Fb+c@h?options=-c%20x%3D1"),
            [
                p("user", "u"),
                p("password", "a/b+c"),
                p("host", "h"),
                p("options", "-c x=1"),
            ]
        );
        for bad in [
            "postgres://u:a%zz@h",
            "postgres://u:%00@h",
            "postgres://h?x=%4",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssl_true_is_sslmode_require_and_malformed_params_are_refused() {
        assert_eq!(
            pairs("postgres://h?ssl=true"),
            [p("host", "h"), p("sslmode", "require")]
        );
        assert!(parse("postgres://h?sslmode").is_err());
        assert!(parse("postgres://h?x=a=b").is_err());
    }

    #[test]
    fn key_values_quote_escape_and_skip_blanks() {
        assert_eq!(
            pairs(r"host=h  user = u password='a b\'c' dbname=d\ e"),
            [
                p("host", "h"),
                p("user", "u"),
                p("password", "a b'c"),
                p("dbname", "d e"),
            ]
        );
        // As in libpq, blanks after '=' are skipped: an empty value must be quoted.
        assert_eq!(pairs("password= user=x"), [p("password", "user=x")]);
        assert_eq!(
            pairs("password='' user=x"),
            [p("password", ""), p("user", "x")]
        );
    }

    #[test]
    fn errors_never_quote_the_input() {
        for bad in [
            "host=h password=hunter 2x user=u",
            "host=h password='hunter2",
            "postgres://u:hunter2@h?hunter2",
            "postgres://u:hunter2@h?a=hunter2=x",
            "postgres://u:hunter2%g@h",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!err.contains("hunter"), "{bad}: {err}");
        }
    }
}
