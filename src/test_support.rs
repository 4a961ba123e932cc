//! What the unit tests share: where the reference Python is.

use std::path::PathBuf;

/// The reference CPython 3.11 (Python pyzor 1.1.2's venv): the
/// `PYZOR_REF_PYTHON` variable, else the venv `scripts/test` leaves in
/// `.cache/ref-client`.
pub fn reference_python() -> PathBuf {
    if let Some(python) = std::env::var_os("PYZOR_REF_PYTHON") {
        return PathBuf::from(python);
    }
    let cached = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/ref-client/bin/python");
    assert!(
        cached.exists(),
        "PYZOR_REF_PYTHON is not set and {} does not exist: run scripts/test once, \
         which installs Python pyzor 1.1.2 there",
        cached.display()
    );
    cached
}
