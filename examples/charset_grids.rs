//! Prints the probe of every double-byte table cell, for
//! scripts/gen-charsets.py, which compares them with Python's codecs and
//! writes src/digest/charset/cjk_tables.rs.

fn main() {
    print!("{}", pyzor_milter::digest::charset::dump_cjk_grids());
}
