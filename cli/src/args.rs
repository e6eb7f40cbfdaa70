//! The arguments the object commands share (`backup`, `restore`, `schedule` …): which objects
//! to show (`get`, `describe`), which to act on (`delete`, `pause`, `unpause`), and `--confirm`.
//! Declared once so the flags cannot drift apart between commands; each command flattens them
//! into its own arguments with `#[command(flatten)]`.
//!
//! The help of `--selector` names the command's objects ("Only the backups matching …"): a
//! command sets it with `#[command(mut_arg("selector", args::only_matching("backups")))]`,
//! since a flattened struct's doc comments cannot vary by command.

use anyhow::{Result, bail};
use clap::Args;
use kube::api::ListParams;

use crate::cluster::Objects;
use crate::format::Output;

/// The help of `--selector` for a command whose objects are `plural` (`backups`).
pub(crate) fn only_matching(plural: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
    // No final period: clap drops it from one-sentence doc comments, and the other flags'
    // help is written that way.
    move |arg| arg.help(format!("Only the {plural} matching this label selector"))
}

/// The objects of `get` and `describe`: the names given, else all, or those matching `-l`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ShowArgs {
    pub names: Vec<String>,
    /// Only the objects matching this label selector.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
}

impl ShowArgs {
    /// The objects to fetch; names and `-l` together are refused.
    pub fn objects(&self) -> Result<Objects> {
        Objects::given(&self.names, self.selector.as_deref())
    }

    /// Whether one object was named, so `-o json|yaml` prints it alone rather than in a `List`.
    pub fn one_named(&self) -> bool {
        self.names.len() == 1
    }
}

/// `get`'s arguments: the objects, and a table or the objects as JSON or YAML.
#[derive(Debug, Clone, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    pub show: ShowArgs,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The objects a `delete`, `pause` or `unpause` acts on: names, `--all`, or `--selector`
/// (exactly one, as Velero requires).
#[derive(Debug, Clone, Args)]
pub(crate) struct Selection {
    /// The names of the objects.
    pub names: Vec<String>,
    /// Every object.
    #[arg(long)]
    pub all: bool,
    /// The objects matching this label selector.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
}

impl Selection {
    /// Checks that exactly one way of naming objects is used; `kind` is the objects' plural.
    pub fn objects(&self, kind: &str) -> Result<Objects> {
        match (self.names.is_empty(), self.all, &self.selector) {
            (false, false, None) => Ok(Objects::Named(self.names.clone())),
            (true, true, None) => Ok(Objects::Listed(ListParams::default())),
            (true, false, Some(text)) => Objects::matching(Some(text)),
            _ => bail!("name the {kind}, or pass --all, or pass --selector: exactly one of them"),
        }
    }
}

/// `delete`'s arguments: the objects, and whether to ask first.
#[derive(Debug, Clone, Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub confirm: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        #[command(mut_arg("selector", only_matching("backups")))]
        Get(GetArgs),
        Delete(DeleteArgs),
    }

    fn parse(args: &[&str]) -> Result<Sub, clap::Error> {
        let mut all = vec!["x"];
        all.extend(args);
        <Cli as clap::Parser>::try_parse_from(all).map(|c| c.command)
    }

    #[test]
    fn the_selector_s_help_names_the_command_s_objects() {
        let command = <Cli as clap::CommandFactory>::command();
        let get = command.find_subcommand("get").expect("get");
        let selector = get
            .get_arguments()
            .find(|a| a.get_id() == "selector")
            .expect("--selector");
        assert_eq!(
            selector.get_help().map(ToString::to_string).as_deref(),
            Some("Only the backups matching this label selector")
        );
    }

    #[test]
    fn get_takes_names_or_a_selector_not_both() {
        let Sub::Get(get) = parse(&["get", "a", "b", "-o", "json"]).unwrap() else {
            panic!("not get")
        };
        assert_eq!(get.show.names, ["a", "b"]);
        assert_eq!(get.output, Output::Json);
        assert!(!get.show.one_named());
        assert!(matches!(get.show.objects().unwrap(), Objects::Named(_)));
        let Sub::Get(get) = parse(&["get", "a", "-l", "app=web"]).unwrap() else {
            panic!("not get")
        };
        assert!(get.show.objects().is_err());
    }

    #[test]
    fn delete_takes_exactly_one_way_of_naming() {
        for args in [
            &["delete", "a"][..],
            &["delete", "--all"],
            &["delete", "-l", "a=b"],
        ] {
            let Sub::Delete(delete) = parse(args).unwrap() else {
                panic!("not delete")
            };
            assert!(delete.selection.objects("backups").is_ok(), "{args:?}");
            assert!(!delete.confirm);
        }
        for args in [
            &["delete"][..],
            &["delete", "a", "--all"],
            &["delete", "--all", "-l", "a"],
        ] {
            let Sub::Delete(delete) = parse(args).unwrap() else {
                panic!("not delete")
            };
            let err = delete.selection.objects("backups").unwrap_err().to_string();
            assert!(err.contains("exactly one"), "{args:?}: {err}");
        }
    }
}
