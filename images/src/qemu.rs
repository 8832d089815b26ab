//! The QEMU command line for a Bulkhead machine, shared by `cargo xtask run` and the
//! integration tests so both boot the image the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host_tools::Ovmf;

/// Which IOMMU the emulated machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iommu {
    None,
    /// Intel VT-d with interrupt remapping (produces an ACPI DMAR table).
    Intel,
    /// AMD-Vi (produces an ACPI IVRS table).
    Amd,
}

/// How the image is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMedium {
    /// A plain SATA disk.
    Disk,
    /// A USB mass-storage stick on an xHCI controller, as on a laptop.
    UsbStick,
    /// The same stick without a `bootindex`: with a bootindex on the stick only, OVMF
    /// deletes the boot entries an installer writes (QemuBootOrderLib), so installs
    /// run with none and the firmware follows its own BootOrder.
    UsbStickNoBootIndex,
    /// No image attached (the stick is pulled out): the machine boots from its disk.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A QEMU window (GTK/SDL), serial on the terminal.
    Window,
    /// No window; serial on stdout or wherever `serial` says.
    Headless,
}

/// Where the first serial port goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    Stdio,
    File(PathBuf),
    /// A Unix socket QEMU listens on: the harness both reads the console and types.
    Socket(PathBuf),
}

#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub image: PathBuf,
    pub ovmf_code: PathBuf,
    /// A per-run copy of the OVMF variable store (OVMF writes to it).
    pub ovmf_vars: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// `-cpu` model; [`CPU_MODEL`] unless a test needs another CPU.
    pub cpu_model: String,
    pub iommu: Iommu,
    pub medium: BootMedium,
    pub display: Display,
    pub serial: Serial,
    pub qmp_socket: Option<PathBuf>,
    /// `-icount shift=0,sleep=off`: guest time counts instructions (benchmarks).
    pub icount: bool,
    /// An internal NVMe disk (raw image), as on a laptop; no bootindex.
    pub nvme_disk: Option<PathBuf>,
    pub extra_args: Vec<String>,
}

/// CPU model: TCG's AMD SVM with nested paging. `max` also gives VGIF; EPYC models drop
/// features under TCG.
pub const CPU_MODEL: &str = "max,+svm,+npt";

impl MachineConfig {
    pub fn new(image: &Path, ovmf: &Ovmf, ovmf_vars: PathBuf) -> Self {
        MachineConfig {
            image: image.to_path_buf(),
            ovmf_code: ovmf.code.clone(),
            ovmf_vars,
            memory_mib: 1024,
            cpus: 2,
            cpu_model: CPU_MODEL.into(),
            iommu: Iommu::None,
            medium: BootMedium::Disk,
            display: Display::Headless,
            serial: Serial::Stdio,
            qmp_socket: None,
            icount: false,
            nvme_disk: None,
            extra_args: Vec::new(),
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-nodefaults", "-no-reboot", "-machine", "q35", "-cpu", &self.cpu_model]);
        push(&["-m", &format!("{}M", self.memory_mib), "-smp", &self.cpus.to_string()]);
        push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", self.ovmf_code.display())]);
        push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", self.ovmf_vars.display())]);
        let image = format!("format=raw,file={},if=none,id=usbimg", self.image.display());
        match self.medium {
            BootMedium::Disk => push(&["-drive", &image, "-device", "ide-hd,drive=usbimg,bootindex=0"]),
            BootMedium::UsbStick => push(&[
                "-device",
                "qemu-xhci,id=xhci",
                "-drive",
                &image,
                "-device",
                "usb-storage,bus=xhci.0,drive=usbimg,bootindex=0",
            ]),
            BootMedium::UsbStickNoBootIndex => push(&[
                "-device",
                "qemu-xhci,id=xhci",
                "-drive",
                &image,
                "-device",
                "usb-storage,bus=xhci.0,drive=usbimg,removable=on",
            ]),
            BootMedium::None => {}
        }
        match self.iommu {
            Iommu::None => {}
            Iommu::Intel => push(&["-device", "intel-iommu,intremap=on"]),
            Iommu::Amd => push(&["-device", "amd-iommu"]),
        }
        // After the IOMMU: QEMU translates DMA and remaps interrupts only for devices
        // created after it.
        if let Some(nvme) = &self.nvme_disk {
            push(&["-drive", &format!("format=raw,file={},if=none,id=nvme0", nvme.display())]);
            push(&["-device", "nvme,drive=nvme0,serial=BULKHEAD0001"]);
        }
        push(&["-vga", "std"]);
        match self.display {
            Display::Window => {}
            Display::Headless => push(&["-display", "none"]),
        }
        match &self.serial {
            // `mon:` multiplexes the QEMU monitor in: Ctrl-A X quits, Ctrl-A C opens it.
            Serial::Stdio => push(&["-serial", "mon:stdio"]),
            Serial::File(path) => push(&["-serial", &format!("file:{}", path.display())]),
            Serial::Socket(path) => push(&["-serial", &format!("unix:{},server=on,wait=on", path.display())]),
        }
        push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        if let Some(sock) = &self.qmp_socket {
            push(&["-qmp", &format!("unix:{},server=on,wait=off", sock.display())]);
        }
        if self.icount {
            push(&["-icount", "shift=0,sleep=off"]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    pub fn command(&self, qemu: &Path) -> Command {
        let mut cmd = Command::new(qemu);
        cmd.args(self.args());
        cmd
    }
}

/// QEMU's exit status for the verdicts the hypervisor writes to isa-debug-exit.
pub const EXIT_SUCCESS: i32 = (0x10 << 1) | 1;
pub const EXIT_FAILURE: i32 = (0x11 << 1) | 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MachineConfig {
        let ovmf = Ovmf { code: "/fw/CODE.fd".into(), vars_template: "/fw/VARS.fd".into() };
        MachineConfig::new(Path::new("/t/usb.img"), &ovmf, "/t/vars.fd".into())
    }

    fn joined(c: &MachineConfig) -> String {
        c.args().join(" ")
    }

    #[test]
    fn baseline_machine_has_svm_ovmf_and_debug_exit() {
        let args = joined(&config());
        assert!(args.contains("-nodefaults -no-reboot -machine q35 -cpu max,+svm,+npt"));
        assert!(args.contains("if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"));
        assert!(args.contains("if=pflash,format=raw,unit=1,file=/t/vars.fd"));
        assert!(args.contains("isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(args.contains("-display none"));
    }

    #[test]
    fn usb_stick_sits_on_xhci_and_iommus_are_selectable() {
        let mut c = config();
        c.medium = BootMedium::UsbStick;
        c.iommu = Iommu::Amd;
        let args = joined(&c);
        assert!(args.contains("qemu-xhci,id=xhci"));
        assert!(args.contains("usb-storage,bus=xhci.0,drive=usbimg,bootindex=0"));
        assert!(args.contains("-device amd-iommu"));
        c.iommu = Iommu::Intel;
        assert!(joined(&c).contains("intel-iommu,intremap=on"));
    }

    #[test]
    fn install_machines_have_an_nvme_disk_and_no_bootindex() {
        let mut c = config();
        c.medium = BootMedium::UsbStickNoBootIndex;
        c.nvme_disk = Some("/t/nvme.img".into());
        let args = joined(&c);
        assert!(args.contains("usb-storage,bus=xhci.0,drive=usbimg,removable=on"));
        assert!(args.contains("format=raw,file=/t/nvme.img,if=none,id=nvme0 -device nvme,drive=nvme0,serial="));
        assert!(!args.contains("bootindex"), "{args}");
        c.medium = BootMedium::None;
        let args = joined(&c);
        assert!(!args.contains("usbimg") && !args.contains("bootindex"), "{args}");
        assert!(args.contains("nvme,drive=nvme0"));
    }
}
