//! A parsed HCL file: the (HCL1-rewritten) text, its line index and the
//! hcl-edit body, with helpers to turn byte spans into positions and errors.

use std::ops::Range;

use hcl_edit::structure::Body;

use super::error::{HclError, Pos};
use super::hcl1;

/// One HCL source file, parsed.
#[derive(Debug)]
pub struct Source {
    name: String,
    /// The text hcl-edit parsed (after the HCL1 pre-pass); spans index it.
    text: String,
    /// Byte offsets in `text` where the pre-pass inserted one byte.
    inserted: Vec<usize>,
    /// Key offsets (in `text`) of attributes that were `key { ... }` blocks in the file.
    hcl1_blocks: Vec<usize>,
    /// Byte offset of the start of every line of the original text.
    line_starts: Vec<usize>,
    original: String,
    body: Body,
}

impl Source {
    /// Parses `text` (named `name` in errors) into a body, after rewriting
    /// HCL1-only quoted-key blocks into object attributes.
    pub fn parse(name: &str, text: &str) -> Result<Source, HclError> {
        let rewrite = hcl1::rewrite(text);
        let mut source = Source {
            name: name.to_string(),
            text: rewrite.text,
            inserted: rewrite.inserted,
            hcl1_blocks: rewrite.blocks,
            line_starts: line_starts(text),
            original: text.to_string(),
            body: Body::new(),
        };
        match hcl_edit::parser::parse_body(&source.text) {
            Ok(body) => source.body = body,
            Err(err) => {
                let message = format!("syntax error: {}", err.message());
                return Err(source.error_at(err.location().offset(), message));
            }
        }
        Ok(source)
    }

    /// The file name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root body.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The 1-based line and column of a byte offset into the parsed text.
    pub fn pos(&self, offset: usize) -> Pos {
        let shift = self.inserted.iter().filter(|&&at| at < offset).count();
        let offset = offset.saturating_sub(shift).min(self.original.len());
        let line = self.line_starts.partition_point(|&start| start <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self.original.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        Pos { line, column }
    }

    /// The position of the start of a span (1:1 for nodes built without one).
    pub fn span_pos(&self, span: Option<Range<usize>>) -> Pos {
        self.pos(span.map_or(0, |s| s.start))
    }

    /// An error at a byte offset.
    pub fn error_at(&self, offset: usize, message: impl Into<String>) -> HclError {
        HclError::new(&self.name, self.pos(offset), message)
    }

    /// An error at the start of a span.
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> HclError {
        HclError::new(&self.name, self.span_pos(span), message)
    }

    /// The source text a span covers, as written.
    pub fn snippet(&self, span: Range<usize>) -> &str {
        self.text.get(span).unwrap_or_default()
    }

    /// True if the attribute whose key starts at `offset` was written as an
    /// HCL1 block (`env { "K" = "v" }`) and rewritten by the pre-pass.
    pub fn was_hcl1_block(&self, offset: usize) -> bool {
        self.hcl1_blocks.binary_search(&offset).is_ok()
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let src = Source::parse("f.hcl", "a = 1\nbé = \"x\"\n").expect("parses");
        assert_eq!(src.pos(0), Pos { line: 1, column: 1 });
        assert_eq!(src.pos(6), Pos { line: 2, column: 1 });
        // 'é' is two bytes but one column.
        assert_eq!(src.pos(9), Pos { line: 2, column: 3 });
    }

    #[test]
    fn syntax_errors_carry_the_location() {
        let err = Source::parse("bad.hcl", "a = 1\nb = = 2\n").expect_err("must fail");
        assert_eq!((err.file.as_str(), err.line), ("bad.hcl", 2));
        assert!(err.to_string().starts_with("bad.hcl:2:"), "{err}");
    }
}
