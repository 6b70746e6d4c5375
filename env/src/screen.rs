//! What an environment shows a person: a terminal's cells (character and colour) and its
//! cursor. Recordings are made of these; training never looks at them.

/// One frame of an env's terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub rows: usize,
    pub cols: usize,
    /// Row-major characters as the terminal shows them; anything below 32 is a blank.
    pub chars: Vec<u8>,
    /// Colour of each cell in NetHack's numbering (the ANSI order; 8–15 bright).
    pub colors: Vec<u8>,
    /// `(row, column)` of the cursor, where the env has one.
    pub cursor: Option<(u16, u16)>,
}

/// NetHack's "no colour": the terminal's default.
pub const NO_COLOR: u8 = 8;

impl Screen {
    /// A blank screen.
    pub fn blank(rows: usize, cols: usize) -> Self {
        Screen { rows, cols, chars: vec![b' '; rows * cols], colors: vec![NO_COLOR; rows * cols], cursor: None }
    }

    /// Lines of text in the default colour, at least `min_cols` wide (a terminal's width
    /// keeps successive frames the same shape).
    pub fn from_text(text: &str, min_cols: usize) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let cols = lines.iter().map(|l| l.len()).max().unwrap_or(0).max(min_cols);
        let mut s = Screen::blank(lines.len(), cols);
        for (r, line) in lines.iter().enumerate() {
            s.chars[r * cols..r * cols + line.len()].copy_from_slice(line.as_bytes());
        }
        s
    }

    /// The cell at `(row, col)`: its character (blanks as spaces) and colour.
    pub fn cell(&self, row: usize, col: usize) -> (u8, u8) {
        let i = row * self.cols + col;
        let c = self.chars[i];
        (if c < 32 { b' ' } else { c }, self.colors[i] & 15)
    }

    /// One row as text, trailing blanks removed.
    pub fn row_text(&self, row: usize) -> String {
        let s: String = (0..self.cols).map(|c| self.cell(row, c).0 as char).collect();
        s.trim_end().to_string()
    }

    /// The whole screen as text, one line per row.
    pub fn text(&self) -> String {
        (0..self.rows).map(|r| self.row_text(r)).collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_control_bytes_read_as_blanks() {
        assert_eq!(Screen::from_text("ab", 80).cols, 80);
        let mut s = Screen::from_text("-----\n|.@.|\n---", 0);
        assert_eq!((s.rows, s.cols), (3, 5));
        assert_eq!(s.text(), "-----\n|.@.|\n---");
        s.chars[1] = 0;
        assert_eq!(s.cell(0, 1), (b' ', NO_COLOR));
        assert_eq!(s.row_text(0), "- ---");
    }
}
