//! The demo's interactive shell (`capdial> `): the CLI's data, keyspace, member, fault and
//! status commands against the demo's cluster, with line editing and history (rustyline).
//!
//! Lines are split like a POSIX shell would split simple words (quotes group, a backslash
//! escapes), and `--endpoint n3` may name a node of the demo instead of its address.

use super::demo::cluster::LocalCluster;
use super::ops;
use crate::client::conn::Client;
use crate::types::NodeId;
use anyhow::Context;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use std::io::Write;

const PROMPT: &str = "capdial> ";
/// Lines the history keeps.
const HISTORY_LINES_MAX: usize = 1000;
const HISTORY_FILE: &str = "shell-history.txt";

/// Why a line could not be split into words.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SplitError {
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
    #[error("a backslash at the end of the line escapes nothing")]
    TrailingBackslash,
}

/// Splits a command line into words: whitespace separates, `'...'` and `"..."` group (no
/// escapes inside single quotes), a backslash outside single quotes takes the next character
/// as it is.
pub(crate) fn split_words(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some('\''), c) => word.get_or_insert_with(String::new).push(c),
            (_, '\\') => {
                let escaped = chars.next().ok_or(SplitError::TrailingBackslash)?;
                word.get_or_insert_with(String::new).push(escaped);
            }
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(open) = quote {
        return Err(SplitError::UnterminatedQuote(open));
    }
    words.extend(word);
    Ok(words)
}

/// Replaces a node name after `--endpoint` (`--endpoint n3` or `--endpoint=n3`) by the
/// node's address; anything else is left as it is.
pub(crate) fn resolve_endpoints(
    words: &[String],
    address_of: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut resolved = Vec::with_capacity(words.len());
    let mut after_flag = false;
    for word in words {
        let replaced = if after_flag {
            address_of(word).unwrap_or_else(|| word.clone())
        } else if let Some(name) = word.strip_prefix("--endpoint=") {
            address_of(name).map_or_else(|| word.clone(), |address| format!("--endpoint={address}"))
        } else {
            word.clone()
        };
        after_flag = word == "--endpoint";
        resolved.push(replaced);
    }
    resolved
}

fn help(cluster: &LocalCluster) -> String {
    let nodes: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("{}={}", node.id, node.address))
        .collect();
    format!(
        "{}\nIn this shell: `--endpoint n1` names a node of the demo ({}); `help` shows this, `exit` or Ctrl-D leaves (and stops the cluster).\n",
        ops::help_text(),
        nodes.join(", ")
    )
}

/// Runs the shell until `exit` or Ctrl-D. Ctrl-C clears the current line.
pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    cluster: &LocalCluster,
) -> anyhow::Result<()> {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES_MAX)
        .context("configuring the line editor")?
        .auto_add_history(true)
        .build();
    let mut editor = DefaultEditor::with_config(config).context("starting the line editor")?;
    let history = cluster.dir().join(HISTORY_FILE);
    // A missing history file is the normal first run.
    let _ = editor.load_history(&history);
    println!("\nType `help` for the commands, Ctrl-D to stop the cluster and leave.");
    let address_of =
        |name: &str| NodeId::parse(name).and_then(|id| cluster.endpoint(id).map(str::to_string));
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error).context("reading a line"),
        };
        let words = match split_words(&line) {
            Ok(words) => words,
            Err(error) => {
                eprintln!("error: {error}");
                continue;
            }
        };
        match words.first().map(String::as_str) {
            None => continue,
            Some("exit" | "quit") => break,
            Some("help") => {
                print!("{}", help(cluster));
                continue;
            }
            Some(_) => {}
        }
        let words = resolve_endpoints(&words, address_of);
        let mut out = std::io::stdout();
        if let Err(error) = runtime.block_on(ops::run_line(client, &words, false, &mut out)) {
            eprintln!("error: {error:#}");
        }
        let _ = out.flush();
    }
    if let Err(error) = editor.save_history(&history) {
        eprintln!("capdial: could not save the shell history to {history:?}: {error}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line).expect("splits")
    }

    #[test]
    fn words_split_on_whitespace_and_group_in_quotes() {
        assert_eq!(
            words("  put orders k1   v1 "),
            ["put", "orders", "k1", "v1"]
        );
        assert_eq!(
            words("put orders k 'two words'"),
            ["put", "orders", "k", "two words"]
        );
        assert_eq!(
            words(r#"put o k "say \"hi\"""#),
            ["put", "o", "k", r#"say "hi""#]
        );
        assert_eq!(words(r"put o k it\'s"), ["put", "o", "k", "it's"]);
        assert_eq!(words("put o k ''"), ["put", "o", "k", ""]);
        assert_eq!(words("a'b c'd"), ["ab cd"]);
        assert!(words("").is_empty());
        assert_eq!(
            split_words("put o k 'open"),
            Err(SplitError::UnterminatedQuote('\''))
        );
        assert_eq!(split_words("put \\"), Err(SplitError::TrailingBackslash));
    }

    #[test]
    fn node_names_after_endpoint_become_addresses() {
        let address_of = |name: &str| (name == "n3").then(|| "127.0.0.1:7003".to_string());
        let line = words("get orders k --endpoint n3 --read stale");
        assert_eq!(
            resolve_endpoints(&line, address_of),
            words("get orders k --endpoint 127.0.0.1:7003 --read stale")
        );
        let line = words("get orders k --endpoint=n3");
        assert_eq!(
            resolve_endpoints(&line, address_of),
            words("get orders k --endpoint=127.0.0.1:7003")
        );
        // Only the word after --endpoint is a node name: a key named n3 stays.
        let line = words("get orders n3 --endpoint 10.0.0.1:7001");
        assert_eq!(resolve_endpoints(&line, address_of), line);
    }
}
