//! Column alignment with the semantics of Go's `text/tabwriter`, which kubectl uses for both
//! `get` tables and `describe` output; matching it cell for cell keeps our output
//! byte-compatible with kubectl's.
//!
//! Text is split into lines and lines into cells at tabs. A cell followed by a tab belongs to a
//! column; the last cell of a line does not and is never padded. A column's width is computed
//! over a *block* of consecutive lines that all have a cell in that column, so a line with fewer
//! cells ends the block (this is what lets `describe` nest sections with their own alignment).

/// Formats tab-separated text into aligned columns.
#[derive(Debug, Clone)]
pub struct TabWriter {
    min_width: usize,
    padding: usize,
    /// kubectl's fork of tabwriter remembers column widths across flushes so that rows printed
    /// later (`get --watch`) stay aligned with the header; `None` disables that.
    remembered: Option<Vec<usize>>,
}

impl TabWriter {
    /// `min_width`: smallest column width including padding; `padding`: spaces added to the
    /// widest cell of a column.
    pub fn new(min_width: usize, padding: usize) -> Self {
        TabWriter {
            min_width,
            padding,
            remembered: None,
        }
    }

    /// The writer kubectl's table printer uses (minwidth 6, padding 3, widths remembered).
    pub fn for_tables() -> Self {
        TabWriter {
            remembered: Some(Vec::new()),
            ..TabWriter::new(6, 3)
        }
    }

    /// The writer kubectl's describe output uses (minwidth 0, padding 2).
    pub fn for_describe() -> Self {
        TabWriter::new(0, 2)
    }

    /// Aligns `text`. A trailing partial line (no final newline) is kept as is.
    pub fn format(&mut self, text: &str) -> String {
        let mut lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
        // `split` yields a final empty piece after the last newline; it is not a line.
        let ends_with_newline = text.ends_with('\n');
        if ends_with_newline {
            lines.pop();
        }
        let mut out = String::with_capacity(text.len() + text.len() / 2);
        let mut widths = Vec::new();
        self.format_block(&lines, 0, lines.len(), &mut widths, &mut out);
        if !ends_with_newline && out.ends_with('\n') {
            out.pop();
        }
        out
    }

    fn format_block(
        &mut self,
        lines: &[Vec<&str>],
        mut line0: usize,
        line1: usize,
        widths: &mut Vec<usize>,
        out: &mut String,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            // A block of lines with a cell in this column starts here.
            write_lines(lines, line0, this, widths, out);
            line0 = this;
            let mut width = self.min_width;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(text_width(lines[this][column]) + self.padding);
                this += 1;
            }
            if let Some(remembered) = self.remembered.as_mut() {
                if remembered.len() <= column {
                    remembered.resize(column + 1, 0);
                }
                width = width.max(remembered[column]);
                remembered[column] = width;
            }
            widths.push(width);
            self.format_block(lines, line0, this, widths, out);
            widths.pop();
            line0 = this;
        }
        write_lines(lines, line0, line1, widths, out);
    }
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(j).filter(|_| j + 1 < line.len()) {
                let pad = w.saturating_sub(text_width(cell));
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
}

/// Go's tabwriter counts runes, not bytes.
fn text_width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_with_padding_and_min_width() {
        let mut tw = TabWriter::new(6, 3);
        let out = tw.format("NAME\tAGE\nweb-longer\t5s\n");
        assert_eq!(out, "NAME         AGE\nweb-longer   5s\n");
        // Narrow columns still get the minimum width.
        let out = TabWriter::new(6, 3).format("A\tB\nc\td\n");
        assert_eq!(out, "A     B\nc     d\n");
    }

    #[test]
    fn last_cell_is_never_padded_and_empty_cells_are() {
        let out = TabWriter::new(0, 2).format("IP:\t\nName:\tweb\n");
        assert_eq!(out, "IP:    \nName:  web\n");
    }

    #[test]
    fn lines_without_tabs_end_a_block() {
        let text = "Name:\tweb\nContainers:\n  nginx:\n    Image:\tnginx\n    Port:\t<none>\nMounts:\nStatus:\tRunning\n";
        let out = TabWriter::new(0, 2).format(text);
        assert_eq!(
            out,
            "Name:  web\nContainers:\n  nginx:\n    Image:  nginx\n    Port:   <none>\nMounts:\nStatus:  Running\n"
        );
        // Adjacent lines with tabs share one block, whatever their indentation (this is why
        // kubectl's describe output has its characteristic wide gaps).
        let out = TabWriter::new(0, 2).format("    Image:\tnginx\nStatus:\tRunning\n");
        assert_eq!(out, "    Image:  nginx\nStatus:     Running\n");
    }

    #[test]
    fn nested_columns_align_within_their_block() {
        let text = "a\tb\tc\nlong\tx\ny\n";
        let out = TabWriter::new(0, 1).format(text);
        assert_eq!(out, "a    b c\nlong x\ny\n");
    }

    #[test]
    fn counts_characters_not_bytes() {
        let out = TabWriter::new(0, 1).format("é\tx\nab\ty\n");
        assert_eq!(out, "é  x\nab y\n");
    }

    #[test]
    fn remembered_widths_only_grow() {
        let mut tw = TabWriter::for_tables();
        assert_eq!(
            tw.format("NAME\tAGE\nlong-name-here\t1s\n"),
            "NAME             AGE\nlong-name-here   1s\n"
        );
        // A later, narrower row keeps the earlier width.
        assert_eq!(tw.format("a\t2s\n"), "a                2s\n");
        // Without remembering, the row gets its own width.
        assert_eq!(TabWriter::new(6, 3).format("a\t2s\n"), "a     2s\n");
    }

    #[test]
    fn keeps_trailing_partial_line_and_empty_input() {
        assert_eq!(TabWriter::new(0, 1).format("a\tb"), "a b");
        assert_eq!(TabWriter::new(0, 1).format(""), "");
    }
}
