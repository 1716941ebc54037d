//! The `s3://` URL: bucket, prefix and the query parameters, checked strictly (an unknown
//! parameter is refused so that a typo cannot fall back to a default), and never holding a
//! secret.

use super::*;

/// What an `s3://` URL says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct S3Url {
    pub(super) bucket: String,
    /// Empty, or ends with `/`.
    pub(super) prefix: String,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) path_style: bool,
    /// Names of environment variables (never their values).
    pub(super) credential_env: Option<(String, String)>,
    pub(super) max_attempts: u32,
}

impl S3Url {
    pub(super) fn parse(url: &str) -> Result<S3Url, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        if parsed.scheme() != "s3" {
            return Err("not an s3:// URL".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "credentials do not belong in the URL: name environment variables with \
                 access_key_env= and secret_key_env=, or use the AWS environment or profile"
                    .into(),
            );
        }
        if parsed.port().is_some() {
            return Err("the bucket cannot have a port: use endpoint= for the server".into());
        }
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        if !valid_bucket(&bucket) {
            return Err(format!(
                "`{bucket}` is not a valid bucket name (3-63 lowercase letters, digits, dots and \
                 hyphens)"
            ));
        }
        let prefix = parse_prefix(parsed.path())?;

        let mut endpoint = None;
        let mut region = None;
        let mut path_style = None;
        let mut access_key_env = None;
        let mut secret_key_env = None;
        let mut max_attempts = None;
        for (name, value) in parsed.query_pairs() {
            let value = value.into_owned();
            let slot_taken = match name.as_ref() {
                "endpoint" => endpoint.replace(parse_endpoint(&value)?).is_some(),
                "region" => region.replace(value).is_some(),
                "path_style" => path_style.replace(parse_bool(&value)?).is_some(),
                "access_key_env" => access_key_env.replace(env_name(&value)?).is_some(),
                "secret_key_env" => secret_key_env.replace(env_name(&value)?).is_some(),
                "max_attempts" => max_attempts.replace(parse_attempts(&value)?).is_some(),
                other => {
                    return Err(format!(
                        "unknown parameter `{other}` (known: endpoint, region, path_style, \
                         access_key_env, secret_key_env, max_attempts)"
                    ));
                }
            };
            if slot_taken {
                return Err(format!("parameter `{name}` is given twice"));
            }
        }
        let credential_env = match (access_key_env, secret_key_env) {
            (Some(a), Some(s)) => Some((a, s)),
            (None, None) => None,
            _ => return Err("give both access_key_env= and secret_key_env=, or neither".into()),
        };
        if region.as_deref() == Some("") {
            return Err("region= is empty".into());
        }
        Ok(S3Url {
            bucket,
            prefix,
            // S3-compatible servers rarely have wildcard DNS for virtual-hosted buckets.
            path_style: path_style.unwrap_or(endpoint.is_some()),
            endpoint,
            region,
            credential_env,
            max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        })
    }
}

pub(super) fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

/// The URL path as a key prefix: `""` or `a/b/`. Its parts follow the object-name rules, so a
/// prefix cannot smuggle `..` or odd characters into keys.
pub(super) fn parse_prefix(path: &str) -> Result<String, String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    check_key("", trimmed).map_err(|_| {
        format!("prefix `{trimmed}` may only hold letters, digits, `.`, `-`, `_` and `/`")
    })?;
    Ok(format!("{trimmed}/"))
}

pub(super) fn parse_endpoint(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("endpoint= is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("endpoint= must be an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err("endpoint= must not carry credentials or a query".into());
    }
    Ok(value.trim_end_matches('/').to_string())
}

pub(super) fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("path_style= takes true or false, not `{value}`")),
    }
}

pub(super) fn env_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`{value}` is not an environment variable name (the URL names the variables that \
             hold credentials, never the credentials themselves)"
        ))
    }
}

pub(super) fn parse_attempts(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (1..=10).contains(&n) => Ok(n),
        _ => Err(format!("max_attempts= takes 1 to 10, not `{value}`")),
    }
}

/// `s3://user:password@…` must not reach an error message verbatim.
pub(super) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = S3Url::parse(
            "s3://my-bucket/backups/vault1/?endpoint=http://127.0.0.1:9000&region=eu-west-1\
             &path_style=false&access_key_env=AK&secret_key_env=SK&max_attempts=2",
        )
        .unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "backups/vault1/");
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(u.region.as_deref(), Some("eu-west-1"));
        assert!(!u.path_style);
        assert_eq!(u.credential_env, Some(("AK".into(), "SK".into())));
        assert_eq!(u.max_attempts, 2);
    }

    #[test]
    fn defaults() {
        let u = S3Url::parse("s3://bucket").unwrap();
        assert_eq!(u.prefix, "");
        assert!(!u.path_style);
        assert_eq!(u.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let u = S3Url::parse("s3://bucket/?endpoint=http://localhost:1").unwrap();
        assert!(u.path_style, "an endpoint implies path style");
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "s3://bucket/?color=red",
            "s3://bucket/?region=a&region=b",
            "s3://bucket/?access_key_env=A",
            "s3://bucket/?access_key_env=A&secret_key_env=not%20a%20name",
            "s3://bucket/a%20b",
            "s3://bucket/?endpoint=ftp://x",
            "s3://bucket/?path_style=maybe",
            "s3://bucket/?max_attempts=0",
            "s3://BadBucket/",
            "s3://ab/",
            "s3://bucket:9000/",
        ] {
            assert!(S3Url::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn secrets_in_urls_are_refused_and_redacted() {
        let err = S3Target::open("t", "s3://AKID:supersecret@bucket/")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(!text.contains("supersecret"), "{text}");
        assert!(text.contains("credentials do not belong"), "{text}");
    }
}
