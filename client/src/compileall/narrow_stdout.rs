//! compileall's stdout when it is not UTF-8 (`PYTHONIOENCODING=latin-1`, `ascii`, a legacy
//! locale): compileall encodes every line with that codec, and a path it cannot encode makes it
//! fail with `UnicodeEncodeError` (traceback, exit 1) at the line that prints it, after having
//! compiled what came before. pycache prints UTF-8, so such runs are handed to the
//! interpreter's compileall, which then prints and fails exactly where it does.

use crate::compileall::plan::Event;
use crate::pyrepr::repr;

/// True when stdout is UTF-8 under any of Python's spellings of the name.
fn is_utf8(encoding: &str) -> bool {
    let name: String = encoding
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    name == "utf8"
}

/// Why the planned run must be left to compileall, if it must: some line it may print is not
/// ASCII while stdout is not UTF-8. With `-q` only failures print a path, and which files fail
/// is not known before compiling, so every path counts.
pub fn reason_to_delegate(events: &[Event], quiet: u32, encoding: &str) -> Option<&'static str> {
    if is_utf8(encoding) {
        return None;
    }
    let narrow = events.iter().any(|event| match event {
        Event::WalkLine(line) | Event::FileLine(line) => !line.is_ascii(),
        Event::File(task) => quiet < 2 && !repr(&task.fullname).is_ascii(),
        Event::StopIfFailed => false,
    });
    narrow.then_some("a path to print is not ASCII and stdout is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_ascii_lines_on_a_narrow_stdout_delegate() {
        let events = vec![Event::WalkLine("Listing 'caf\u{e9}'...".into())];
        assert!(reason_to_delegate(&events, 0, "latin-1").is_some());
        assert!(reason_to_delegate(&events, 0, "UTF8").is_none());
        assert!(reason_to_delegate(&events, 0, "utf-8").is_none());
        let ascii = vec![Event::WalkLine("Listing 'cafe'...".into())];
        assert!(reason_to_delegate(&ascii, 0, "ascii").is_none());
    }
}
