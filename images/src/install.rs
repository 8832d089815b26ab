//! Preparing the install story in QEMU: a stick that carries an answer file, and an
//! empty internal disk (a sparse raw image).

use std::io;
use std::path::Path;

use crate::disk;

/// Where the loader looks for the answer file on the stick's ESP.
pub const ESP_ANSWER: &str = "/bulkhead/install.cfg";

/// An answer file that installs to the one internal NVMe disk.
pub fn answer(overwrite: bool, wait_seconds: u32) -> String {
    format!("# Written by cargo xtask.\ntarget = first-nvme\noverwrite = {overwrite}\nwait_seconds = {wait_seconds}\n")
}

/// Copies `image` to `stick` and puts `answer` on the copy's ESP.
pub fn make_install_stick(image: &Path, stick: &Path, answer: &str) -> io::Result<()> {
    std::fs::copy(image, stick)?;
    disk::overwrite_esp_file(stick, ESP_ANSWER, answer.as_bytes())
}

/// Creates (or empties) a sparse raw disk image of `bytes` bytes.
pub fn create_empty_disk(path: &Path, bytes: u64) -> io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_nvme_target_and_the_overwrite_choice() {
        let text = answer(false, 0);
        assert!(text.contains("target = first-nvme\n"));
        assert!(text.contains("overwrite = false\n"));
        assert!(text.contains("wait_seconds = 0\n"));
    }

    #[test]
    fn empty_disks_have_the_size_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nvme.img");
        create_empty_disk(&path, 1 << 30).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 30);
    }
}
