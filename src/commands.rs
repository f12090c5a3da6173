//! The one command table: `/help`, Telegram's command menu and Discord's slash-command
//! registration all come from it, and chat text is parsed to a [`Command`] through it.

/// What a chat command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Plan,
    Advance,
    Finalize,
    Cancel,
    Resume,
    Status,
    Help,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub command: Command,
    /// The name users type, without the slash.
    pub name: &'static str,
    /// Other names that mean the same (typed only; not in menus).
    pub aliases: &'static [&'static str],
    /// How to type it, for `/help`.
    pub usage: &'static str,
    /// One line for `/help`.
    pub help: &'static str,
    /// A short line for menus (Telegram allows 256 characters, Discord 100).
    pub menu: &'static str,
}

pub const COMMANDS: [CommandSpec; 7] = [
    CommandSpec {
        command: Command::Plan,
        name: "plan",
        aliases: &[],
        usage: "/plan <slug> <idea>",
        help: "start planning (slug: lower-case letters, digits, dashes)",
        menu: "Start planning: /plan <slug> <idea>",
    },
    CommandSpec {
        command: Command::Advance,
        name: "advance",
        aliases: &["next"],
        usage: "/advance",
        help: "finish this phase and start the next",
        menu: "Finish this phase and start the next",
    },
    CommandSpec {
        command: Command::Finalize,
        name: "finalize",
        aliases: &[],
        usage: "/finalize",
        help: "write the complete plan to final-plan.md",
        menu: "Write the complete plan",
    },
    CommandSpec {
        command: Command::Cancel,
        name: "cancel",
        aliases: &[],
        usage: "/cancel",
        help: "stop the running turn and drop this plan",
        menu: "Stop the running turn and drop the plan",
    },
    CommandSpec {
        command: Command::Resume,
        name: "resume",
        aliases: &[],
        usage: "/resume",
        help: "continue a plan paused after repeated failures",
        menu: "Continue a plan paused after repeated failures",
    },
    CommandSpec {
        command: Command::Status,
        name: "status",
        aliases: &[],
        usage: "/status",
        help: "where the plan stands",
        menu: "Where the plan stands",
    },
    CommandSpec {
        command: Command::Help,
        name: "help",
        aliases: &["start"],
        usage: "/help",
        help: "this text",
        menu: "How planbot works",
    },
];

impl Command {
    /// The command a typed name (without slash or `@bot`, lower-cased) means.
    pub fn parse(name: &str) -> Option<Command> {
        COMMANDS
            .iter()
            .find(|c| c.name == name || c.aliases.contains(&name))
            .map(|c| c.command)
    }

    pub fn spec(self) -> &'static CommandSpec {
        COMMANDS
            .iter()
            .find(|c| c.command == self)
            .unwrap_or(&COMMANDS[COMMANDS.len() - 1])
    }
}

/// The `/help` text.
pub fn help_text() -> String {
    let mut text =
        String::from("planbot plans a product with you, phase by phase, with Claude Code.\n\n");
    for spec in &COMMANDS {
        text.push_str(spec.usage);
        for alias in spec.aliases.iter().filter(|a| **a != "start") {
            text.push_str(&format!(" (or /{alias})"));
        }
        text.push_str(&format!(": {}\n", spec.help));
    }
    text.push_str("\nAnything else you write continues the current phase.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_alias_parses_and_help_lists_them() {
        let help = help_text();
        for spec in &COMMANDS {
            assert_eq!(Command::parse(spec.name), Some(spec.command));
            assert_eq!(spec.command.spec().name, spec.name);
            assert!(help.contains(spec.usage), "{}", spec.name);
            assert!(spec.menu.len() <= 100, "{}: Discord allows 100", spec.name);
            for alias in spec.aliases {
                assert_eq!(Command::parse(alias), Some(spec.command));
            }
        }
        assert!(help.contains("/advance (or /next): finish this phase"));
        assert_eq!(Command::parse("plans"), None);
        assert!(!help.contains("  "), "no runs of spaces");
    }
}
