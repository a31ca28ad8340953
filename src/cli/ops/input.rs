//! Values that do not fit on a command line: `-` reads a value (or one set member) from stdin,
//! `--value-file PATH` / `--member-file PATH` from a file. Either is taken byte for byte, a
//! trailing newline included, so binary values round-trip.
//!
//! Everything is read before the command connects, so a missing file fails at once and a slow
//! stdin does not hold a connection open. A read stops one byte past the value limit: a huge
//! file is refused without being loaded.

use super::UsageError;
use crate::strong::VALUE_BYTES_MAX;
use bytes::Bytes;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where a value or a set member comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The command-line argument itself.
    Arg(String),
    /// `-`: standard input, to its end.
    Stdin,
    /// A file, whole.
    File(PathBuf),
}

impl Source {
    /// The source of a value given as an argument (`-` means stdin) or as a file.
    pub fn of(arg: Option<&str>, file: Option<&Path>) -> Option<Source> {
        match (arg, file) {
            (_, Some(path)) => Some(Source::File(path.to_path_buf())),
            (Some("-"), None) => Some(Source::Stdin),
            (Some(text), None) => Some(Source::Arg(text.to_string())),
            (None, None) => None,
        }
    }
}

/// What `-` may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdin {
    /// The process's standard input (a command run from the command line).
    Process,
    /// Nothing: the demo's shell reads its own lines from stdin.
    Refused,
}

/// Reads the sources of one command. Stdin can be read once: it has only one end.
#[derive(Debug)]
pub struct Loader {
    stdin: Stdin,
    stdin_read: bool,
}

impl Loader {
    pub fn new(stdin: Stdin) -> Loader {
        Loader {
            stdin,
            stdin_read: false,
        }
    }

    /// The bytes of `source`, at most the value limit.
    pub fn load(&mut self, source: &Source) -> anyhow::Result<Bytes> {
        match source {
            Source::Arg(text) => Ok(Bytes::copy_from_slice(text.as_bytes())),
            Source::Stdin => self.load_stdin(),
            Source::File(path) => {
                let what = path.display().to_string();
                let file = std::fs::File::open(path).map_err(|error| {
                    anyhow::Error::new(error).context(format!("opening {what}"))
                })?;
                read_bounded(file, &what)
            }
        }
    }

    fn load_stdin(&mut self) -> anyhow::Result<Bytes> {
        if self.stdin == Stdin::Refused {
            let text = "`-` reads stdin, which the shell uses for its own lines; \
                        pass the value with --value-file (or --member-file) instead";
            return Err(UsageError(text.into()).into());
        }
        if self.stdin_read {
            let text = "`-` can be given once: stdin holds one value";
            return Err(UsageError(text.into()).into());
        }
        self.stdin_read = true;
        read_bounded(std::io::stdin().lock(), "stdin")
    }
}

/// Reads `reader` to its end, refusing more than `VALUE_BYTES_MAX` bytes without reading
/// further. `what` names the source in errors.
pub fn read_bounded(reader: impl Read, what: &str) -> anyhow::Result<Bytes> {
    let mut bytes = Vec::new();
    let limit = VALUE_BYTES_MAX as u64 + 1;
    reader
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|error| {
            anyhow::Error::new(error).context(format!("reading the value from {what}"))
        })?;
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(UsageError(format!(
            "the value from {what} is over the limit of {VALUE_BYTES_MAX} bytes"
        ))
        .into());
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dash_is_stdin_and_a_file_wins_over_nothing() {
        assert_eq!(Source::of(Some("-"), None), Some(Source::Stdin));
        assert_eq!(Source::of(Some("v"), None), Some(Source::Arg("v".into())));
        let path = Path::new("v.bin");
        assert_eq!(
            Source::of(None, Some(path)),
            Some(Source::File(path.to_path_buf()))
        );
        assert_eq!(Source::of(None, None), None);
    }

    #[test]
    fn reads_are_byte_for_byte_and_bounded() {
        let value = b"line one\nline two\n\xff".to_vec();
        let read = read_bounded(&value[..], "test").unwrap();
        assert_eq!(
            read,
            Bytes::from(value),
            "newlines and non-UTF-8 bytes stay"
        );
        let largest = vec![b'v'; VALUE_BYTES_MAX];
        assert_eq!(
            read_bounded(&largest[..], "test").unwrap().len(),
            VALUE_BYTES_MAX
        );
        let over = vec![b'v'; VALUE_BYTES_MAX + 1];
        let error = read_bounded(&over[..], "test").unwrap_err();
        assert!(error.is::<UsageError>(), "{error:#}");
        assert!(error.to_string().contains("over the limit"), "{error:#}");
    }

    #[test]
    fn files_are_read_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value.bin");
        std::fs::write(&path, b"from a file\n").unwrap();
        let mut loader = Loader::new(Stdin::Refused);
        let read = loader.load(&Source::File(path.clone())).unwrap();
        assert_eq!(read, Bytes::from_static(b"from a file\n"));
        let missing = dir.path().join("missing.bin");
        let error = loader.load(&Source::File(missing.clone())).unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
    }

    #[test]
    fn the_shell_refuses_stdin_and_a_command_reads_it_once() {
        let mut loader = Loader::new(Stdin::Refused);
        let error = loader.load(&Source::Stdin).unwrap_err();
        assert!(error.is::<UsageError>(), "{error:#}");
        assert!(error.to_string().contains("--value-file"), "{error:#}");
        // As after a first `-` (reading the test process's stdin here would block).
        let mut loader = Loader {
            stdin: Stdin::Process,
            stdin_read: true,
        };
        let error = loader.load(&Source::Stdin).unwrap_err();
        assert!(error.to_string().contains("once"), "{error:#}");
    }
}
