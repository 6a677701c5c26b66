//! The HCL1 compatibility pre-pass.
//!
//! HCL1 let a block body use quoted keys (`env { "MYSQL_ROOT_PASSWORD" = "x" }`,
//! `labels { "com.example" = "y" }`), which HCL2 rejects: block bodies only
//! hold identifiers. Such a block is rewritten into an object attribute
//! (`env={ ... }`) before parsing, by turning the space between the name and
//! the brace into `=` (or inserting `=` when there is no space), so every line
//! number and almost every column stays as written. The offsets of inserted
//! bytes and of the rewritten keys are returned so positions can be mapped
//! back and decoders can treat the attribute as the block it was.

/// The rewritten text and what was changed.
#[derive(Debug, Default)]
pub(super) struct Rewrite {
    pub text: String,
    /// Offsets (in the new text) at which one byte was inserted, ascending.
    pub inserted: Vec<usize>,
    /// Offsets (in the new text) of the keys of rewritten blocks, ascending.
    pub blocks: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Newline,
    Ident,
    Str,
    Assign,
    Colon,
    Comma,
    Open(u8),
    Close(u8),
    Other,
}

/// A token kind with its byte range.
#[derive(Debug, Clone, Copy)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

/// Rewrites HCL1 quoted-key blocks; text without any is returned unchanged.
pub(super) fn rewrite(text: &str) -> Rewrite {
    let tokens = tokenize(text.as_bytes());
    let targets = quoted_key_blocks(&tokens);
    let mut out = Rewrite { text: String::with_capacity(text.len() + targets.len()), ..Rewrite::default() };
    let mut copied = 0;
    for (ident_start, ident_end, brace) in targets {
        let shift = out.inserted.len();
        out.text.push_str(&text[copied..ident_end]);
        let gap = &text[ident_end..brace];
        if gap.starts_with([' ', '\t']) {
            out.text.push('=');
            copied = ident_end + 1;
        } else {
            out.inserted.push(ident_end + shift);
            out.text.push('=');
            copied = ident_end;
        }
        out.blocks.push(ident_start + shift);
    }
    out.text.push_str(&text[copied..]);
    out
}

/// One open bracket while walking the token stream.
struct Frame {
    /// `(ident_start, ident_end, brace)` if this brace opened `ident {` at the start of an item.
    candidate: Option<(usize, usize, usize)>,
    /// True for `{` frames, whose items are separated by newlines.
    body: bool,
    /// Tokens seen in the current item.
    item_len: usize,
    /// True when the current item so far is a single quoted string.
    first_str: bool,
    /// True once an item of this body was `"quoted" = ...`.
    quoted_key: bool,
    /// The identifier the current item starts with, if it is one.
    last_ident: Option<(usize, usize)>,
}

impl Frame {
    fn new(body: bool, candidate: Option<(usize, usize, usize)>) -> Self {
        Frame { candidate, body, item_len: 0, first_str: false, quoted_key: false, last_ident: None }
    }
}

fn quoted_key_blocks(tokens: &[Token]) -> Vec<(usize, usize, usize)> {
    let mut found = Vec::new();
    let mut stack = vec![Frame::new(true, None)];
    for token in tokens {
        let Some(top) = stack.last_mut() else { break };
        match token.tok {
            Tok::Newline | Tok::Comma if top.body => {
                top.item_len = 0;
                top.first_str = false;
            }
            Tok::Newline => {}
            Tok::Assign | Tok::Colon if top.body && top.item_len == 1 && top.first_str => {
                top.quoted_key = true;
                top.item_len += 1;
            }
            Tok::Open(b) => {
                let candidate = match (b, top.item_len, top.last_ident) {
                    (b'{', 1, Some((start, end))) if top.body => Some((start, end, token.start)),
                    _ => None,
                };
                top.item_len += 1;
                stack.push(Frame::new(b == b'{', candidate));
            }
            Tok::Close(_) => {
                if stack.len() > 1 {
                    if let Some(frame) = stack.pop() {
                        if let (Some(c), true) = (frame.candidate, frame.quoted_key) {
                            found.push(c);
                        }
                    }
                }
            }
            tok => {
                top.first_str = top.item_len == 0 && tok == Tok::Str;
                top.last_ident = (top.item_len == 0 && tok == Tok::Ident).then_some((token.start, token.end));
                top.item_len += 1;
            }
        }
    }
    found.sort_unstable();
    found
}

fn tokenize(src: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let start = i;
        let c = src[i];
        let tok = match c {
            b'\n' => {
                i += 1;
                Tok::Newline
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = line_end(src, i);
                continue;
            }
            b'/' if src.get(i + 1) == Some(&b'/') => {
                i = line_end(src, i);
                continue;
            }
            b'/' if src.get(i + 1) == Some(&b'*') => {
                i = find(src, i + 2, b"*/").map_or(src.len(), |at| at + 2);
                continue;
            }
            b'"' => {
                i = string_end(src, i);
                Tok::Str
            }
            b'<' if src.get(i + 1) == Some(&b'<') && heredoc_end(src, i).is_some() => {
                i = heredoc_end(src, i).unwrap_or(src.len());
                Tok::Other
            }
            b'{' | b'[' | b'(' => {
                i += 1;
                Tok::Open(c)
            }
            b'}' | b']' | b')' => {
                i += 1;
                Tok::Close(c)
            }
            b'=' | b'!' | b'<' | b'>' if src.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Other
            }
            b'=' if src.get(i + 1) == Some(&b'>') => {
                i += 2;
                Tok::Other
            }
            b'=' => {
                i += 1;
                Tok::Assign
            }
            b':' => {
                i += 1;
                Tok::Colon
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            c if is_ident_byte(c) && !c.is_ascii_digit() && c != b'-' => {
                while i < src.len() && is_ident_byte(src[i]) {
                    i += 1;
                }
                Tok::Ident
            }
            _ => {
                i += 1;
                Tok::Other
            }
        };
        tokens.push(Token { tok, start, end: i });
    }
    tokens
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c >= 0x80
}

fn line_end(src: &[u8], from: usize) -> usize {
    src[from..].iter().position(|&b| b == b'\n').map_or(src.len(), |p| from + p)
}

fn find(src: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    src.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p)
}

/// The offset just past the quoted string starting at `start`, following
/// `${ ... }` / `%{ ... }` sequences (which may hold nested strings).
fn string_end(src: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < src.len() {
        match src[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            b'\n' => return i,
            b'$' | b'%' if src.get(i + 1) == Some(&src[i]) && src.get(i + 2) == Some(&b'{') => i += 3,
            b'$' | b'%' if src.get(i + 1) == Some(&b'{') => i = template_end(src, i + 2),
            _ => i += 1,
        }
    }
    src.len()
}

/// The offset just past the `}` closing a template sequence whose body starts at `from`.
fn template_end(src: &[u8], from: usize) -> usize {
    let mut depth = 1usize;
    let mut i = from;
    while i < src.len() {
        match src[i] {
            b'"' => {
                i = string_end(src, i);
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    src.len()
}

/// For `<<DELIM` / `<<-DELIM` at `start`, the offset of the end of the closing delimiter line.
fn heredoc_end(src: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 2;
    if src.get(i) == Some(&b'-') {
        i += 1;
    }
    let name_start = i;
    while i < src.len() && is_ident_byte(src[i]) {
        i += 1;
    }
    let delim = src.get(name_start..i).filter(|d| !d.is_empty())?;
    let mut line = line_end(src, i);
    if src.get(i..line).is_some_and(|rest| rest.iter().any(|b| !b.is_ascii_whitespace())) {
        return None;
    }
    while line < src.len() {
        let next = line + 1;
        let end = line_end(src, next);
        if src[next..end].trim_ascii() == delim {
            return Some(end);
        }
        line = end;
    }
    Some(src.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_key_block_becomes_an_attribute_in_place() {
        let src = "task \"t\" {\n  env {\n    \"A_B\" = \"x\"\n  }\n}\n";
        let out = rewrite(src);
        assert_eq!(out.text, "task \"t\" {\n  env={\n    \"A_B\" = \"x\"\n  }\n}\n");
        assert!(out.inserted.is_empty());
        assert_eq!(out.blocks, vec![13]);
    }

    #[test]
    fn missing_space_inserts_one_byte() {
        let out = rewrite("labels{ \"com.x\" = \"y\" }\n");
        assert_eq!(out.text, "labels={ \"com.x\" = \"y\" }\n");
        assert_eq!(out.inserted, vec![6]);
    }

    #[test]
    fn plain_blocks_objects_and_strings_are_left_alone() {
        let src = concat!(
            "env { A = \"1\" }\n",
            "meta = { \"a.b\" = \"c\" }\n",
            "port \"db\" { static = 1 }\n",
            "x = \"env { \\\"A\\\" = 1 }\"\n",
            "# env { \"A\" = 1 }\n",
            "data = <<EOT\nenv { \"A\" = 1 }\nEOT\n",
            "y = \"${foo(\"}\")}\"\n",
        );
        assert_eq!(rewrite(src).text, src);
    }

    #[test]
    fn nested_and_mixed_keys() {
        let src = "config {\n  labels {\n    foo = \"1\"\n    \"com.x\" = \"y\"\n  }\n}\n";
        assert_eq!(rewrite(src).text, "config {\n  labels={\n    foo = \"1\"\n    \"com.x\" = \"y\"\n  }\n}\n");
    }
}
