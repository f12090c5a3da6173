//! The `claude` child's environment, built from an allowlist: what the CLI needs to run and reach
//! its API, and nothing of planbot's own (bot tokens, database URLs, anything an operator set).

use std::collections::BTreeMap;

/// Names passed as they are.
const EXACT: [&str; 20] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "TMPDIR",
    "CLAUDE_CONFIG_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_OPTIONS",
];
/// Name prefixes passed.
const PREFIXES: [&str; 3] = ["LC_", "ANTHROPIC_", "CLAUDE_CODE_"];
/// Passed only with `CLAUDE_CODE_USE_BEDROCK` set.
const BEDROCK_PREFIXES: [&str; 1] = ["AWS_"];
/// Passed only with `CLAUDE_CODE_USE_VERTEX` set.
const VERTEX: [&str; 4] = [
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUD_ML_REGION",
];
const VERTEX_PREFIXES: [&str; 1] = ["VERTEX_REGION_"];
/// Never passed: they make the CLI believe it runs nested inside another session.
const NEVER: [&str; 2] = ["CLAUDECODE", "CLAUDE_CODE_CHILD_SESSION"];

/// The child's environment from planbot's. `extra` holds names (or `PREFIX*`) from
/// `PLANBOT_CHILD_ENV`; `secrets` are names never passed, whatever else says so.
pub fn child_env(
    parent: &BTreeMap<String, String>,
    extra: &[String],
    secrets: &[String],
) -> BTreeMap<String, String> {
    let switched = |name: &str| {
        parent
            .get(name)
            .is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
    };
    let bedrock = switched("CLAUDE_CODE_USE_BEDROCK");
    let vertex = switched("CLAUDE_CODE_USE_VERTEX");
    let matches = |name: &str, pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    };
    let allowed = |name: &str| {
        let upper = name.to_ascii_uppercase();
        EXACT.contains(&upper.as_str())
            || PREFIXES.iter().any(|p| name.starts_with(p))
            || (bedrock && BEDROCK_PREFIXES.iter().any(|p| name.starts_with(p)))
            || (vertex
                && (VERTEX.contains(&name) || VERTEX_PREFIXES.iter().any(|p| name.starts_with(p))))
            || extra.iter().any(|p| matches(name, p))
    };
    let mut env: BTreeMap<String, String> = parent
        .iter()
        .filter(|(name, _)| allowed(name))
        .filter(|(name, _)| !NEVER.contains(&name.as_str()) && !secrets.contains(name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Newer CLIs strip credentials from the environment of what they run themselves; older ones
    // ignore the variable.
    env.insert("CLAUDE_CODE_SUBPROCESS_ENV_SCRUB".into(), "1".into());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_allowlist_passes() {
        let parent = map(&[
            ("PATH", "/bin"),
            ("HOME", "/h"),
            ("LC_ALL", "C"),
            ("https_proxy", "http://p"),
            ("ANTHROPIC_API_KEY", "k"),
            ("CLAUDE_CODE_MAX_RETRIES", "1"),
            ("CLAUDECODE", "1"),
            ("CLAUDE_CODE_CHILD_SESSION", "1"),
            ("TELEGRAM_BOT_TOKEN", "123:abc"),
            ("DISCORD_TOKEN", "d"),
            ("PLANBOT_DATABASE_URL", "postgres://secret"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("MY_TOOL_HOME", "/x"),
            ("FAKE_CLAUDE_DIR", "/f"),
        ]);
        let env = child_env(
            &parent,
            &[
                "MY_TOOL_HOME".into(),
                "FAKE_CLAUDE_*".into(),
                "DISCORD_TOKEN".into(),
            ],
            &["TELEGRAM_BOT_TOKEN".into(), "DISCORD_TOKEN".into()],
        );
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "ANTHROPIC_API_KEY",
                "CLAUDE_CODE_MAX_RETRIES",
                "CLAUDE_CODE_SUBPROCESS_ENV_SCRUB",
                "FAKE_CLAUDE_DIR",
                "HOME",
                "LC_ALL",
                "MY_TOOL_HOME",
                "PATH",
                "https_proxy"
            ]
        );
    }

    #[test]
    fn cloud_credentials_pass_only_when_their_provider_is_on() {
        let mut parent = map(&[("AWS_REGION", "eu"), ("GOOGLE_CLOUD_PROJECT", "p")]);
        assert!(!child_env(&parent, &[], &[]).contains_key("AWS_REGION"));
        parent.insert("CLAUDE_CODE_USE_BEDROCK".into(), "1".into());
        let env = child_env(&parent, &[], &[]);
        assert!(env.contains_key("AWS_REGION") && !env.contains_key("GOOGLE_CLOUD_PROJECT"));
        parent.insert("CLAUDE_CODE_USE_VERTEX".into(), "1".into());
        assert!(child_env(&parent, &[], &[]).contains_key("GOOGLE_CLOUD_PROJECT"));
    }
}
