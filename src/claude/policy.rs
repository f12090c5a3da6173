//! Which tools the agent gets, as the three lists the CLI takes: `--tools` (the only tools that
//! exist for the turn, so no skill, setting or `Skill` call can add one), `--allowedTools` (what
//! runs without asking; everything else is denied under `dontAsk`) and `--disallowedTools`
//! (always denied; deny wins over any allow).

/// Tools that must never run unless the operator names them knowingly.
const DANGEROUS: [&str; 3] = ["Bash", "Task", "NotebookEdit"];
/// Files in the workspace that the CLI loads as instructions or configuration.
pub const PROTECTED_EDITS: [&str; 5] = [
    "Edit(./CLAUDE.md)",
    "Edit(./**/CLAUDE.md)",
    "Edit(./CLAUDE.local.md)",
    "Edit(./.claude/**)",
    "Edit(./.mcp.json)",
];
/// Tools whose rules name paths; a rule for them must stay inside the workspace.
const FILE_TOOLS: [&str; 6] = ["Read", "Glob", "Grep", "Edit", "Write", "MultiEdit"];

/// The tool lists of every turn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolPolicy {
    /// `--tools`: the tools that exist at all.
    pub tools: Vec<String>,
    /// `--allowedTools`.
    pub allow: Vec<String>,
    /// `--disallowedTools`.
    pub deny: Vec<String>,
    /// Entries that widen the agent's reach beyond its workspace (need `PLANBOT_UNSAFE_TOOLS`).
    pub unsafe_entries: Vec<String>,
}

/// Builds the policy from `PLANBOT_ALLOWED_TOOLS`, `PLANBOT_WEBFETCH_DOMAINS` and the tools the
/// user approves by button (they exist, are not denied, and the path guard answers for them).
pub fn tool_policy(
    allowed: &[String],
    webfetch_domains: &[String],
    approvable: &[String],
) -> ToolPolicy {
    let mut policy = ToolPolicy::default();
    let add_tool = |tools: &mut Vec<String>, name: &str| {
        if !tools.iter().any(|t| t == name) {
            tools.push(name.to_string());
        }
    };
    for entry in allowed {
        let (name, spec) = split_rule(entry);
        match name {
            // A Read rule also governs Glob and Grep; an Edit rule also governs Write.
            "Read" => ["Read", "Glob", "Grep"]
                .iter()
                .for_each(|t| add_tool(&mut policy.tools, t)),
            "Edit" => ["Edit", "Write"]
                .iter()
                .for_each(|t| add_tool(&mut policy.tools, t)),
            _ => add_tool(&mut policy.tools, name),
        }
        if is_unsafe(name, spec) {
            policy.unsafe_entries.push(entry.clone());
        }
        policy.allow.push(entry.clone());
    }
    if !webfetch_domains.is_empty() {
        add_tool(&mut policy.tools, "WebFetch");
        for domain in webfetch_domains {
            policy.allow.push(format!("WebFetch(domain:{domain})"));
        }
    }
    for tool in approvable {
        add_tool(&mut policy.tools, tool);
    }
    let named = |tool: &str| policy.tools.iter().any(|t| t == tool);
    let mut deny: Vec<String> = DANGEROUS
        .iter()
        .filter(|t| !named(t))
        .map(|t| t.to_string())
        .collect();
    if !named("WebFetch") {
        deny.push("WebFetch".into());
    }
    deny.extend(PROTECTED_EDITS.iter().map(|r| r.to_string()));
    policy.deny = deny;
    policy
}

/// `Read(./**)` → (`Read`, `Some("./**")`).
fn split_rule(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once('(') {
        Some((name, rest)) => (name.trim(), Some(rest.trim_end_matches(')'))),
        None => (entry.trim(), None),
    }
}

fn is_unsafe(name: &str, spec: Option<&str>) -> bool {
    if DANGEROUS.contains(&name) {
        return true;
    }
    if FILE_TOOLS.contains(&name) {
        // Only rules rooted in the working directory, with no way up, stay inside it.
        return !spec.is_some_and(|s| s.starts_with("./") && !s.split('/').any(|c| c == ".."));
    }
    if name == "WebFetch" {
        return !spec.is_some_and(|s| {
            s.strip_prefix("domain:")
                .is_some_and(|d| !d.is_empty() && !d.contains('*'))
        });
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn the_default_set_is_scoped_to_the_workspace() {
        let policy = tool_policy(&list("Read(./**),Edit(./**),WebSearch,Skill"), &[], &[]);
        assert_eq!(
            policy.tools,
            list("Read,Glob,Grep,Edit,Write,WebSearch,Skill")
        );
        assert_eq!(policy.allow, list("Read(./**),Edit(./**),WebSearch,Skill"));
        assert!(policy.unsafe_entries.is_empty());
        for denied in [
            "Bash",
            "Task",
            "NotebookEdit",
            "WebFetch",
            "Edit(./.mcp.json)",
        ] {
            assert!(policy.deny.iter().any(|d| d == denied), "{denied}");
        }
    }

    #[test]
    fn webfetch_only_for_listed_domains() {
        let policy = tool_policy(&list("Read(./**)"), &list("example.com,docs.rs"), &[]);
        assert!(policy.tools.contains(&"WebFetch".to_string()));
        assert!(
            policy
                .allow
                .contains(&"WebFetch(domain:docs.rs)".to_string())
        );
        assert!(!policy.deny.contains(&"WebFetch".to_string()));
        assert!(policy.unsafe_entries.is_empty());
    }

    #[test]
    fn widening_entries_are_flagged() {
        for entry in [
            "Read",
            "Glob",
            "Grep",
            "Edit",
            "Write(/etc/**)",
            "Read(./../**)",
            "Bash",
            "Bash(ls:*)",
            "WebFetch",
            "WebFetch(domain:*)",
            "Task",
        ] {
            let policy = tool_policy(&[entry.to_string()], &[], &[]);
            assert_eq!(policy.unsafe_entries, vec![entry.to_string()], "{entry}");
        }
        let policy = tool_policy(&list("Bash"), &[], &[]);
        assert!(!policy.deny.contains(&"Bash".to_string()));
        assert!(policy.deny.contains(&"Edit(./CLAUDE.md)".to_string()));
    }

    #[test]
    fn an_approvable_tool_exists_but_is_neither_allowed_nor_denied() {
        let policy = tool_policy(&list("Read(./**),WebSearch"), &[], &list("WebFetch"));
        assert!(policy.tools.contains(&"WebFetch".to_string()));
        assert!(!policy.allow.iter().any(|a| a.starts_with("WebFetch")));
        assert!(!policy.deny.iter().any(|d| d.starts_with("WebFetch")));
        assert!(policy.deny.contains(&"Bash".to_string()));
        assert!(policy.unsafe_entries.is_empty());
    }
}
