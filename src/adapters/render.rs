//! Claude's markdown for chat platforms: splitting a reply into parts that each fit a platform's
//! limit at paragraph or line boundaries (code blocks closed and re-opened across parts), and
//! rendering markdown as Telegram's HTML with a real markdown parser.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// A block of the source: a paragraph-ish run of lines, or a whole fenced code block.
struct Block {
    lines: Vec<String>,
    /// The fence line (e.g. "```rust") if this is a fenced code block.
    fence: Option<String>,
}

fn fence_of(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
        Some(&trimmed[..3])
    } else {
        None
    }
}

fn blocks_of(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut fence: Option<(String, String)> = None; // (marker, opener line)
    for line in markdown.lines() {
        match &fence {
            Some((marker, opener)) => {
                if line.trim_start().starts_with(marker.as_str())
                    && line
                        .trim()
                        .trim_start_matches(marker.chars().next().unwrap_or('`'))
                        .is_empty()
                {
                    // The closing fence: the code block is one block without its fences.
                    blocks.push(Block {
                        lines: std::mem::take(&mut current),
                        fence: Some(opener.clone()),
                    });
                    fence = None;
                } else {
                    current.push(line.to_string());
                }
            }
            None => {
                if let Some(marker) = fence_of(line) {
                    if !current.is_empty() {
                        blocks.push(Block {
                            lines: std::mem::take(&mut current),
                            fence: None,
                        });
                    }
                    fence = Some((marker.to_string(), line.trim_start().to_string()));
                } else if line.trim().is_empty() {
                    if !current.is_empty() {
                        blocks.push(Block {
                            lines: std::mem::take(&mut current),
                            fence: None,
                        });
                    }
                } else {
                    current.push(line.to_string());
                }
            }
        }
    }
    if let Some((_, opener)) = fence {
        blocks.push(Block {
            lines: current,
            fence: Some(opener),
        });
    } else if !current.is_empty() {
        blocks.push(Block {
            lines: current,
            fence: None,
        });
    }
    blocks
}

fn fenced(opener: &str, lines: &[String]) -> String {
    let marker = &opener[..3];
    format!("{opener}\n{}\n{marker}", lines.join("\n"))
}

/// Splits `markdown` into parts for which `fits` holds, breaking between paragraphs where it
/// can, else between lines, else inside a line; a code block split across parts is closed at the
/// end of one part and re-opened (same language) at the start of the next.
pub fn split_markdown(markdown: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    // Pieces that each fit on their own, in order, marked whether they may join the previous
    // piece in one part.
    let mut pieces: Vec<String> = Vec::new();
    for block in blocks_of(markdown) {
        let whole = match &block.fence {
            Some(opener) => fenced(opener, &block.lines),
            None => block.lines.join("\n"),
        };
        if fits(&whole) {
            pieces.push(whole);
            continue;
        }
        // Too big: split by lines, each chunk valid on its own.
        let wrap = |lines: &[String]| match &block.fence {
            Some(opener) => fenced(opener, lines),
            None => lines.join("\n"),
        };
        let mut chunk: Vec<String> = Vec::new();
        for line in &block.lines {
            let mut candidate = chunk.clone();
            candidate.push(line.clone());
            if fits(&wrap(&candidate)) {
                chunk = candidate;
                continue;
            }
            if !chunk.is_empty() {
                pieces.push(wrap(&chunk));
                chunk.clear();
            }
            if fits(&wrap(std::slice::from_ref(line))) {
                chunk.push(line.clone());
            } else {
                // One line too long on its own: cut it where it fits.
                for part in split_line(line, &|s: &str| fits(&wrap(&[s.to_string()]))) {
                    pieces.push(wrap(&[part]));
                }
            }
        }
        if !chunk.is_empty() {
            pieces.push(wrap(&chunk));
        }
    }
    // Pack pieces into parts, paragraphs separated by a blank line.
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    for piece in pieces {
        if current.is_empty() {
            current = piece;
            continue;
        }
        let candidate = format!("{current}\n\n{piece}");
        if fits(&candidate) {
            current = candidate;
        } else {
            parts.push(std::mem::replace(&mut current, piece));
        }
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    parts
}

/// Cuts a line into the longest prefixes that fit, preferring spaces.
fn split_line(line: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let chars: Vec<(usize, char)> = rest.char_indices().collect();
        // Binary search the longest prefix (in chars) that fits.
        let (mut lo, mut hi) = (1usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let end = chars.get(mid).map_or(rest.len(), |(i, _)| *i);
            if fits(&rest[..end]) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let mut end = chars.get(lo).map_or(rest.len(), |(i, _)| *i);
        if end < rest.len()
            && let Some(space) = rest[..end].rfind(' ').filter(|s| *s > end / 2)
        {
            end = space + 1;
        }
        parts.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    parts
}

/// A reply as messages: `parts_of(markdown)`, or when that is more than `max_parts`, the parts
/// of a summary and `true`: the whole reply then goes as the file `reply.md`.
pub fn reply_parts<P>(
    markdown: &str,
    max_parts: usize,
    parts_of: impl Fn(&str) -> Vec<P>,
) -> (Vec<P>, bool) {
    let parts = parts_of(markdown);
    if parts.len() <= max_parts {
        return (parts, false);
    }
    (parts_of(&long_reply_summary(markdown)), true)
}

/// The start of a reply too long for chat, pointing to the attached `reply.md`; a code block
/// cut open is closed, so the note is not shown as code.
fn long_reply_summary(markdown: &str) -> String {
    let mut start: String = markdown.chars().take(600).collect();
    start.truncate(start.trim_end().len());
    start.push('…');
    if start.matches("```").count() % 2 == 1 {
        start.push_str("\n```");
    }
    format!(
        "{start}\n\n_{}_",
        crate::conversation::copy::full_reply_attached(markdown.chars().count())
    )
}

/// Length as Telegram counts it: UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Renders markdown as the HTML subset Telegram accepts (`b`, `i`, `s`, `code`, `pre`, `a`,
/// `blockquote`); headings become bold lines, lists become bullet lines, tables become rows.
pub fn telegram_html(markdown: &str) -> String {
    let options =
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES | Options::ENABLE_TASKLISTS;
    let mut html = Html::default();
    for event in Parser::new_ext(markdown, options) {
        html.event(event);
    }
    html.out.trim_end().to_string()
}

/// Telegram HTML being written from markdown events.
#[derive(Default)]
struct Html {
    out: String,
    /// Each open list: the next number for ordered lists.
    lists: Vec<Option<u64>>,
    /// The cell of the table row being written.
    cell: usize,
}

impl Html {
    fn event(&mut self, event: Event) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => escape(&text, &mut self.out),
            Event::Code(code) => {
                self.out.push_str("<code>");
                escape(&code, &mut self.out);
                self.out.push_str("</code>");
            }
            Event::Html(html) | Event::InlineHtml(html) => escape(&html, &mut self.out),
            Event::SoftBreak | Event::HardBreak => self.out.push('\n'),
            Event::Rule => self.out.push_str("——————\n\n"),
            Event::TaskListMarker(done) => self.out.push_str(if done { "☑ " } else { "☐ " }),
            Event::FootnoteReference(name) => escape(&format!("[{name}]"), &mut self.out),
            Event::InlineMath(m) | Event::DisplayMath(m) => escape(&m, &mut self.out),
        }
    }

    fn start(&mut self, tag: Tag) {
        match tag {
            Tag::Paragraph => {}
            Tag::Heading { .. } => self.out.push_str("<b>"),
            Tag::BlockQuote(_) => self.out.push_str("<blockquote>"),
            Tag::CodeBlock(kind) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => {
                        info.split_whitespace().next().unwrap_or("").to_string()
                    }
                    CodeBlockKind::Indented => String::new(),
                };
                let lang: String = lang
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '#'))
                    .collect();
                if lang.is_empty() {
                    self.out.push_str("<pre><code>");
                } else {
                    self.out
                        .push_str(&format!("<pre><code class=\"language-{lang}\">"));
                }
            }
            Tag::List(start) => {
                if !self.lists.is_empty() && !self.out.ends_with('\n') {
                    self.out.push('\n');
                }
                self.lists.push(start);
            }
            Tag::Item => {
                let depth = self.lists.len().saturating_sub(1);
                self.out.push_str(&"  ".repeat(depth));
                match self.lists.last_mut() {
                    Some(Some(n)) => {
                        self.out.push_str(&format!("{n}. "));
                        *n += 1;
                    }
                    _ => self.out.push_str("• "),
                }
            }
            Tag::Emphasis => self.out.push_str("<i>"),
            Tag::Strong => self.out.push_str("<b>"),
            Tag::Strikethrough => self.out.push_str("<s>"),
            Tag::Link { dest_url, .. } => {
                self.out.push_str("<a href=\"");
                escape(&dest_url, &mut self.out);
                self.out.push_str("\">");
            }
            Tag::TableRow | Tag::TableHead => self.cell = 0,
            Tag::TableCell => {
                if self.cell > 0 {
                    self.out.push_str(" | ");
                }
                self.cell += 1;
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                self.out
                    .push_str(if self.lists.is_empty() { "\n\n" } else { "\n" })
            }
            TagEnd::Heading(_) => self.out.push_str("</b>\n\n"),
            TagEnd::BlockQuote(_) => {
                trim_end_newlines(&mut self.out);
                self.out.push_str("</blockquote>\n\n");
            }
            TagEnd::CodeBlock => {
                trim_end_newlines(&mut self.out);
                self.out.push_str("</code></pre>\n\n");
            }
            TagEnd::List(_) => {
                self.lists.pop();
                if self.lists.is_empty() {
                    self.out.push('\n');
                }
            }
            TagEnd::Item if !self.out.ends_with('\n') => self.out.push('\n'),
            TagEnd::Emphasis => self.out.push_str("</i>"),
            TagEnd::Strong => self.out.push_str("</b>"),
            TagEnd::Strikethrough => self.out.push_str("</s>"),
            TagEnd::Link => self.out.push_str("</a>"),
            TagEnd::TableHead | TagEnd::TableRow => self.out.push('\n'),
            TagEnd::Table => self.out.push('\n'),
            _ => {}
        }
    }
}

fn trim_end_newlines(out: &mut String) {
    while out.ends_with('\n') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_over_its_parts_becomes_a_summary_and_a_file() {
        let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(reply_parts("a\nb", 3, lines), (lines("a\nb"), false));
        let long = "line\n".repeat(10);
        let (parts, as_file) = reply_parts(&long, 3, lines);
        assert!(as_file);
        assert_eq!(parts, lines(&long_reply_summary(&long)));
    }

    #[test]
    fn a_summary_closes_the_code_block_it_cuts() {
        let md = format!("Intro\n\n```rust\n{}```\n", "let x = 1;\n".repeat(100));
        let summary = long_reply_summary(&md);
        assert_eq!(summary.matches("```").count(), 2, "{summary}");
        assert!(summary.ends_with("attached as reply.md._"));
        assert!(summary.contains(&format!("({} characters)", md.chars().count())));
    }

    #[test]
    fn html_escapes_and_maps_markdown() {
        let html = telegram_html(
            "# Title\n\nSome *em* and **bold** with <script> & `a<b`.\n\n- one\n- [link](https://x.y/?a=1&b=\"2\")\n\n```rust\nfn main() { 1 < 2 }\n```",
        );
        assert_eq!(
            html,
            "<b>Title</b>\n\nSome <i>em</i> and <b>bold</b> with &lt;script&gt; &amp; <code>a&lt;b</code>.\n\n\
             • one\n• <a href=\"https://x.y/?a=1&amp;b=&quot;2&quot;\">link</a>\n\n\
             <pre><code class=\"language-rust\">fn main() { 1 &lt; 2 }</code></pre>"
        );
    }

    #[test]
    fn ordered_and_nested_lists() {
        let html = telegram_html("1. a\n2. b\n   - c\n");
        assert_eq!(html, "1. a\n2. b\n  • c");
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(
            split_markdown("hello\n\nworld", &|s| s.len() < 100),
            ["hello\n\nworld"]
        );
    }

    #[test]
    fn parts_break_at_paragraphs_and_reopen_code() {
        let code: Vec<String> = (0..30).map(|i| format!("let x{i} = {i};")).collect();
        let md = format!(
            "Intro paragraph.\n\n```rust\n{}\n```\n\nOutro.",
            code.join("\n")
        );
        let parts = split_markdown(&md, &|s| s.chars().count() <= 120);
        assert!(parts.len() > 3, "{parts:?}");
        for part in &parts {
            assert!(part.chars().count() <= 120, "{part}");
            assert_eq!(
                part.matches("```").count() % 2,
                0,
                "fences balanced in {part}"
            );
        }
        assert!(parts[1].starts_with("```rust\n"));
        let rejoined: String = parts.join("\n");
        for line in &code {
            assert!(rejoined.contains(line.as_str()));
        }
        assert!(parts.last().unwrap().ends_with("Outro."));
    }

    #[test]
    fn a_huge_line_is_cut() {
        let md = "word ".repeat(100);
        let parts = split_markdown(&md, &|s| s.len() <= 50);
        assert!(parts.iter().all(|p| p.len() <= 50));
        assert_eq!(parts.concat().replace(' ', ""), md.replace(' ', ""));
    }

    #[test]
    fn utf16_counts_like_telegram() {
        assert_eq!(utf16_len("a😀"), 3);
    }
}
