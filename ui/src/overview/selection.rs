//! Which overview tile is selected, and how the arrow keys move it.
//!
//! The grid wraps like a torus: Left/Right move along the row and wrap to the other end
//! of the same row; Up/Down move along the column and wrap to the other end of the
//! same column. A last row with fewer tiles is shorter, and columns that do not reach
//! it wrap from the row above. Tab-style cycling in reading order is [`Selection::next`].

/// An arrow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
}

/// The selected tile among `count` laid out in `columns` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    index: usize,
    count: usize,
    columns: usize,
}

impl Selection {
    /// The first of `count` tiles in a grid of `columns` columns (as
    /// [`super::Layout::columns`] says).
    pub fn new(count: usize, columns: u32) -> Selection {
        Selection { index: 0, count, columns: (columns as usize).max(1) }
    }

    /// The same grid with tile `index` selected (clamped to the last tile).
    pub fn with_index(self, index: usize) -> Selection {
        Selection { index: index.min(self.count.saturating_sub(1)), ..self }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The selection after pressing `direction`.
    pub fn moved(self, direction: Direction) -> Selection {
        if self.count == 0 {
            return self;
        }
        let row = self.index / self.columns;
        let column = self.index % self.columns;
        let row_start = row * self.columns;
        let row_len = (self.count - row_start).min(self.columns);
        let rows = self.count.div_ceil(self.columns);
        // Rows that have a tile in this column: all but possibly the last.
        let column_len = if (rows - 1) * self.columns + column < self.count { rows } else { rows - 1 };
        let index = match direction {
            Direction::Right => row_start + (column + 1) % row_len,
            Direction::Left => row_start + (column + row_len - 1) % row_len,
            Direction::Down => ((row + 1) % column_len) * self.columns + column,
            Direction::Up => ((row + column_len - 1) % column_len) * self.columns + column,
        };
        self.with_index(index)
    }

    /// The next tile in reading order, wrapping from the last to the first.
    pub fn next(self) -> Selection {
        if self.count == 0 {
            return self;
        }
        self.with_index((self.index + 1) % self.count)
    }

    /// The previous tile in reading order, wrapping from the first to the last.
    pub fn previous(self) -> Selection {
        if self.count == 0 {
            return self;
        }
        self.with_index((self.index + self.count - 1) % self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::Direction::*;
    use super::*;

    fn after(count: usize, columns: u32, start: usize, keys: &[Direction]) -> usize {
        keys.iter().fold(Selection::new(count, columns).with_index(start), |s, &k| s.moved(k)).index()
    }

    #[test]
    fn two_by_two_grid() {
        // 0 1
        // 2 3
        assert_eq!(after(4, 2, 0, &[Right]), 1);
        assert_eq!(after(4, 2, 1, &[Right]), 0);
        assert_eq!(after(4, 2, 0, &[Left]), 1);
        assert_eq!(after(4, 2, 0, &[Down]), 2);
        assert_eq!(after(4, 2, 2, &[Down]), 0);
        assert_eq!(after(4, 2, 1, &[Up]), 3);
        assert_eq!(after(4, 2, 3, &[Left, Up, Right]), 1);
    }

    #[test]
    fn incomplete_last_row() {
        // 0 1 2
        // 3 4
        assert_eq!(after(5, 3, 3, &[Right]), 4);
        assert_eq!(after(5, 3, 4, &[Right]), 3);
        assert_eq!(after(5, 3, 3, &[Left]), 4);
        assert_eq!(after(5, 3, 2, &[Down]), 2, "column 2 has one tile");
        assert_eq!(after(5, 3, 2, &[Up]), 2);
        assert_eq!(after(5, 3, 1, &[Down]), 4);
        assert_eq!(after(5, 3, 4, &[Down]), 1);
        assert_eq!(after(5, 3, 0, &[Up]), 3);
    }

    #[test]
    fn single_row_and_single_tile() {
        assert_eq!(after(2, 2, 0, &[Right]), 1);
        assert_eq!(after(2, 2, 0, &[Down]), 0);
        assert_eq!(after(2, 2, 1, &[Up]), 1);
        for key in [Left, Right, Up, Down] {
            assert_eq!(after(1, 1, 0, &[key]), 0);
        }
    }

    #[test]
    fn no_tiles_and_bad_input_do_not_panic() {
        for key in [Left, Right, Up, Down] {
            assert_eq!(after(0, 1, 0, &[key]), 0);
            assert_eq!(after(3, 0, 0, &[key, key]), after(3, 1, 0, &[key, key]));
        }
        assert_eq!(Selection::new(3, 2).with_index(99).index(), 2);
        assert_eq!(Selection::new(0, 2).next().previous().index(), 0);
    }

    #[test]
    fn reading_order_cycles() {
        let s = Selection::new(3, 2);
        assert_eq!(s.next().next().next().index(), 0);
        assert_eq!(s.previous().index(), 2);
    }
}
