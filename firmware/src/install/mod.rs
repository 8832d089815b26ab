//! The installer's pure parts: what is written to the internal disk (GPT, FAT32 ESP, the
//! boot entry), and which disk it goes to. The UEFI side (firmware/src/installer.rs)
//! only moves blocks and variables.

pub mod answer;
pub mod confirm;
pub mod crc32;
pub mod disks;
pub mod fat32;
pub mod gpt;
pub mod guid;
pub mod load_option;
pub mod signature;
