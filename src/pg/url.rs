//! libpq connection strings (a URI or `keyword=value`s) split into pairs as `fe-connect.c`
//! splits them; no error quotes the input, any part may be a password. Meaning is options.rs's.

/// Keyword/value pairs in the order given; where a keyword repeats, the last one wins.
pub type Pairs = Vec<(String, String)>;

/// Splits a connection string in either of libpq's two forms.
pub fn parse(text: &str) -> Result<Pairs, String> {
    match text.strip_prefix("postgresql://").or_else(|| text.strip_prefix("postgres://")) {
        Some(rest) => parse_uri(rest),
        None if text.contains('=') => parse_key_values(text),
        None => Err("must be a postgres:// URL or a key=value connection string".into()),
    }
}

/// `[user[:password]@][host][:port][,...][/dbname][?param1=value1&...]`, as libpq's
/// `conninfo_uri_parse_options` reads it: credentials only when an `@` comes before the first
/// `/`, ending at the first `@` (a `?` in them is the password's); hosts end at `:`, `/`, `?`
/// or `,`, an IPv6 one is in brackets. Every part is percent-decoded; `#` is nothing special.
fn parse_uri(uri: &str) -> Result<Pairs, String> {
    let mut pairs = Pairs::new();
    // A part, percent-decoded (`what` names it in an error); nothing when it is empty.
    let part = |key: &str, text: &str, what: &str| match text {
        "" => Ok(None),
        text => decode(text, what).map(|value| Some((key.to_owned(), value))),
    };
    let mut rest = uri;
    if let Some(at) = rest.find(['@', '/']).filter(|&i| rest.as_bytes()[i] == b'@') {
        let credentials = &rest[..at];
        rest = &rest[at + 1..];
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        pairs.extend(part("user", user, "the user name")?);
        pairs.extend(part("password", password, "the password")?);
    }

    let (mut hosts, mut ports) = (String::new(), String::new());
    let terminator = loop {
        let (host, after) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let end = bracketed.find(']').ok_or("an IPv6 host address has no closing ']'")?;
                if end == 0 {
                    return Err("an IPv6 host address is empty".into());
                }
                let after = &bracketed[end + 1..];
                if !matches!(after.bytes().next(), None | Some(b':' | b'/' | b'?' | b',')) {
                    Err("an IPv6 host address is followed by something other than ':', '/', \
                         '?' or ','")?;
                }
                (&bracketed[..end], after)
            }
            None => rest.split_at(rest.find([':', '/', '?', ',']).unwrap_or(rest.len())),
        };
        hosts.push_str(host);
        rest = after;
        if let Some(after_colon) = rest.strip_prefix(':') {
            let end = after_colon.find(['/', '?', ',']).unwrap_or(after_colon.len());
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
    pairs.extend(part("host", &hosts, "the host")?);
    pairs.extend(part("port", &ports, "the port")?);

    if terminator == Some(b'/') {
        let path = &rest[1..];
        let end = path.find('?').unwrap_or(path.len());
        pairs.extend(part("dbname", &path[..end], "the database name")?);
        rest = &path[end..];
    }
    if let Some(query) = rest.strip_prefix('?') {
        for (param, ordinal) in query.split('&').zip(1..).filter(|(param, _)| !param.is_empty()) {
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

/// libpq's percent-decoding: every `%` starts two hex digits, `%00` is refused, `+` stays a
/// plus; `what` names the part in an error.
fn decode(text: &str, what: &str) -> Result<String, String> {
    for (at, _) in text.match_indices('%') {
        match text.as_bytes().get(at + 1..at + 3) {
            Some(b"00") => return Err(format!("{what} holds %00, which libpq forbids")),
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {}
            _ => return Err(format!("{what} holds an invalid percent-encoding")),
        }
    }
    let not_utf8 = |_| format!("{what} is not UTF-8 once percent-decoded");
    Ok(percent_encoding::percent_decode_str(text).decode_utf8().map_err(not_utf8)?.into_owned())
}

/// `keyword = value ...`, as libpq's `conninfo_parse` reads it: blanks around `=` are skipped;
/// a value ends at a blank unless quoted with `'…'`; `\` escapes the next character, quoted or not.
fn parse_key_values(text: &str) -> Result<Pairs, String> {
    let mut pairs = Pairs::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let Some(_) = chars.peek() else { break };
        let ordinal = pairs.len() + 1;
        let key = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_ascii_whitespace()));
        let key: String = key.collect();
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
                value.extend(if c == '\\' { chars.next() } else { Some(c) });
            }
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each string's pairs, or `refused`. A '?' in the password: tests/api/tls.rs.
    #[test]
    fn splits_as_libpq_does() {
        for case in [
            // An '@' is a user name designator only before the first '/'.
            "postgres://host/db?x=me@corp => host=host dbname=db x=me@corp",
            "postgres://u:p%40ss@h => user=u password=p@ss host=h",
            "postgresql://[::1]:5433,h2:5434,h3/d => host=::1,h2,h3 port=5433,5434, dbname=d",
            "postgres://u:a%2Fb+c@h?options=-c%20x%3D1 => user=u password=a/b+c host=h \
             options=-c x=1",
            "postgres://h?ssl=true => host=h sslmode=require",
            r"user = u  password='a b\'c' dbname=d\ e => user=u password=a b'c dbname=d e",
            // Blanks after '=' are skipped: an empty value must be quoted.
            "password= user=x => password=user=x",
            "password='' user=x => password= user=x",
            "postgres://[::1/d => refused",
            "postgres://[]/d => refused",
            "postgres://[::1]x/d => refused",
            "postgres://u:a%zz@h => refused",
            "postgres://u:%00@h => refused",
            "postgres://h?x=%4 => refused",
            "postgres://h?sslmode => refused",
            "postgres://h?x=a=b => refused",
        ] {
            let (text, expected) = case.split_once(" => ").unwrap();
            let got = parse(text).map_or("refused".into(), |pairs| {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                pairs.join(" ")
            });
            assert_eq!(got, expected, "{text}");
        }
    }
}
