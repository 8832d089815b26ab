//! `cargo xtask`: build Bulkhead's USB image, boot it in QEMU, and more.
//! Run `cargo xtask --help` for the commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use images::qemu::{BootMedium, Display, Iommu, MachineConfig};
use images::{build, desktops, disk, host_tools, layout, policy};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test Bulkhead, the bare-metal client hypervisor")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the hypervisor and the UEFI loader and write the bootable USB image.
    ///
    /// The image is a GPT disk with a FAT32 EFI System Partition. Write it to a stick
    /// with `sudo dd if=target/bulkhead-usb.img of=/dev/sdX bs=4M conv=fsync`.
    Image(ImageArgs),
    /// Build the image and boot it in QEMU (q35, AMD SVM with nested paging, OVMF).
    ///
    /// Opens a window when a display is available, otherwise runs headless with the
    /// serial console on this terminal. Quit with Ctrl-A X in the terminal (or close
    /// the window).
    Run(RunArgs),
    /// Measure under `-icount shift=0,sleep=off` (exact, repeatable figures).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// The management server laptops check in with: serve, publish bundles, status.
    #[command(subcommand)]
    Mgmt(images::mgmt::cli::MgmtCmd),
    /// IT's policy: keys, checking the TOML, signing it into a bundle, inspecting one.
    ///
    /// The format is described in docs/policy.md; images/policies/demo.toml is a full
    /// example. A secret key never goes into an image: only the bundles it signs do.
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Make a signing key: writes NAME.secret (readable by you only; keep it offline)
    /// and NAME.public (give it to whoever checks bundles).
    Keygen {
        /// Path and name of the key files, without suffix (e.g. keys/it-2026).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a policy TOML file: prints every error and warning with its line and column.
    Check {
        file: PathBuf,
        /// RAM of the laptops it is for (e.g. 16G, 8192M): the VMs' memory must fit.
        #[arg(long, default_value = "16G", value_parser = parse_ram)]
        ram: u64,
    },
    /// Compile and sign a policy TOML file into a bundle for `cargo xtask image --bundle`
    /// or the management server.
    Sign {
        file: PathBuf,
        /// The secret key (from `policy keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Endorsement files (from `policy rotate`) leading from the key laptops trust
        /// to --key; repeat, oldest first.
        #[arg(long = "endorsement")]
        endorsements: Vec<PathBuf>,
        /// Where to write the bundle.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "16G", value_parser = parse_ram)]
        ram: u64,
        /// Issue time, Unix seconds (default: now).
        #[arg(long)]
        issued_at: Option<u64>,
        /// Expiry, Unix seconds (default: issue time plus valid_for_days).
        #[arg(long)]
        expires_at: Option<u64>,
    },
    /// Print what a bundle holds: version, validity, target, signer, endorsements and
    /// the policy; with --key, whether that key (or a key it endorsed) signed it.
    Show {
        bundle: PathBuf,
        /// A public key file (NAME.public).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Hand over from an old key to a new one: the old key signs an endorsement of the
    /// new one, which `policy sign --endorsement` puts into bundles signed by the new key.
    Rotate {
        /// The key laptops trust now.
        #[arg(long)]
        old: PathBuf,
        /// The new key's public file.
        #[arg(long)]
        new: PathBuf,
        /// Counts rotations: 1 for the first, then 2, ... (a laptop only moves forward).
        #[arg(long, default_value_t = 1)]
        generation: u32,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Boot the desktop kernel and initramfs directly under QEMU and inside Bulkhead;
    /// report the guest boot time to its ready marker in both, their ratio, the exits
    /// by reason during the boot and the exit rate of the idle shell.
    LinuxBoot,
    /// The switcher: hotkey-to-first-frame time of a VM switch, and the bytes copied
    /// to the screen per frame for an idle desktop and for one that redraws all the time.
    Switch {
        /// Boot the existing image without rebuilding it.
        #[arg(long)]
        no_build: bool,
    },
    /// The path length of one exit round trip: a payload VM times CPUID, a hypercall,
    /// a port read, an MMIO load, an MSR write and HLT woken by an interrupt, each
    /// next to a baseline loop without the exit; reports instructions per round trip,
    /// the baseline, their difference (the hypervisor's work) and exits per iteration.
    Exits {
        /// Boot the existing image without rebuilding it.
        #[arg(long)]
        no_build: bool,
        /// Also break each round trip down by stage of the exit path (the hypervisor's
        /// `exit-stages` option: TSC checkpoints, which add a few instructions each).
        #[arg(long)]
        stages: bool,
        /// Run under Bochs with an Intel CPU model, on the VMX backend, instead of
        /// QEMU's SVM (Bochs's TSC counts instructions too).
        #[arg(long)]
        bochs: bool,
        /// CPUs of the emulated machine (QEMU only). With 2 or more, the payload runs
        /// on an application processor and its exits are handled on the boot CPU, so
        /// the figures include the hand-over between the two.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
    },
    /// The network path: a desktop downloads 32 MiB from a server on the host through
    /// the networking service VM, and again with the same NIC passed through to it
    /// directly; reports instructions and exits per MiB on each side, link frames and
    /// copies per byte, and the throughput ratio (several minutes).
    Net,
    /// The disk encryption on this host, one core: AES-256-XTS in MB/s on AES-NI and
    /// on the constant-time software fallback, 64 MiB in 512-byte sectors, one sector
    /// and 128 sectors per call; their ratio; one Argon2id KEK derivation.
    Xts,
    /// The disk path: a desktop writes 64 MiB of random data to its disk and reads them
    /// back (dd bs=1M with O_DIRECT, checked by MD5) under -icount, on its virtio-blk
    /// disk backed by host RAM, by an unencrypted and by an AES-256-XTS volume on the
    /// hypervisor's NVMe drive, and with QEMU's NVMe controller (1b36:0010) passed
    /// through to it; reports MiB/s in guest time, exits per MiB and the instructions per
    /// MiB in the desktop and in the hypervisor, and the ratio of each virtio-blk path to
    /// the passed-through one (several minutes).
    Disk {
        /// Only these paths (repeat or separate with commas); the passed-through drive
        /// is measured too whenever a ratio is wanted.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<DiskPart>,
    },
    /// Several vCPUs per VM, on a 4-CPU machine with a 2-vCPU and a 1-vCPU Linux
    /// desktop: under -icount, the guest's AP bring-up time (its dmesg), the latency of
    /// IPIs between its vCPUs (sender's ICR write to the receiver's injection and EOI)
    /// and hotkey-to-first-frame with every vCPU busy; under multi-threaded TCG, the
    /// wall-time speed-up of two CPU-bound jobs on 2 vCPUs against 1, and the
    /// latencies again in wall time (about 8 minutes after the build).
    Smp {
        /// Boot the existing image without rebuilding it.
        #[arg(long)]
        no_build: bool,
        /// Rounds of the speed-up measurement (each runs the jobs on both desktops).
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Only the -icount boot, or only the multi-threaded one (wall time: the
        /// speed-up, and the latencies again in wall time).
        #[arg(long, value_enum)]
        only: Option<SmpPart>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SmpPart {
    Icount,
    Wall,
}

/// One path of `bench disk`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DiskPart {
    /// virtio-blk on a disk in host RAM.
    Ram,
    /// virtio-blk on an unencrypted NVMe volume.
    Plain,
    /// virtio-blk on an AES-256-XTS NVMe volume.
    Xts,
    /// The NVMe controller passed through.
    Direct,
}

#[derive(clap::Args)]
struct ImageArgs {
    /// Where to write the image.
    #[arg(long, default_value_os_t = layout::default_image_path())]
    out: PathBuf,
    /// Force a screen mode, e.g. 1280x800 (default: the largest up to 1920x1080).
    #[arg(long, value_parser = parse_mode)]
    gop: Option<(u32, u32)>,
    /// Options passed to the hypervisor (e.g. `log=debug`).
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Leave out the desktop VMs (just the hypervisor and its boot screen).
    #[arg(long)]
    bare: bool,
    /// The policy to run (TOML), signed with --key (default: images/policies/demo.toml
    /// signed with the demo key).
    #[arg(long, requires = "key", conflicts_with = "bundle")]
    policy: Option<PathBuf>,
    /// The secret key that signs --policy.
    #[arg(long, requires = "policy")]
    key: Option<PathBuf>,
    /// An already signed policy bundle (from `cargo xtask policy sign`).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Put this answer file on the ESP as \bulkhead\install.cfg: the stick then
    /// installs Bulkhead on the laptop's internal disk unattended.
    #[arg(long)]
    install_answer: Option<PathBuf>,
    /// Size of the "Bulkhead data" partition after the ESP (e.g. 512M, 4G; whole MiB,
    /// at least 4M). On a machine that boots only from the stick the desktops'
    /// encrypted disks live there; an installed laptop's NVMe data partition wins
    /// (docs/usb-storage.md). The partition is zeros, sparse in the image file.
    #[arg(long, default_value = "512M", value_parser = parse_ram)]
    data_partition: u64,
    /// Leave the data partition out (the stick then holds only the ESP).
    #[arg(long)]
    no_data_partition: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Guest RAM of the emulated laptop, in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Number of CPUs of the emulated laptop (the boot CPU keeps the switcher and the
    /// devices; each VM's vCPUs get the others, round robin).
    #[arg(long, default_value_t = 4)]
    cpus: u32,
    /// IOMMU of the emulated laptop.
    #[arg(long, value_enum, default_value_t = IommuArg::Intel)]
    iommu: IommuArg,
    /// Attach the image as a SATA disk instead of a USB stick on xHCI (qemu-xhci +
    /// usb-storage, the default, as on a laptop). The hypervisor drives only USB
    /// sticks itself, so the image's data partition is then not used.
    #[arg(long)]
    sata: bool,
    /// The install story: boot a copy of the image as a stick with an answer file next
    /// to an empty NVMe disk (target/run-nvme.img), let it install unattended and power
    /// off, then boot again from the NVMe disk alone with the same OVMF variables.
    #[arg(long)]
    install: bool,
    /// Give the laptop an internal NVMe disk for the VMs' data (target/run-data.img,
    /// 2 GiB), created with a GPT holding one "Bulkhead data" partition when it does
    /// not exist yet; the hypervisor finds it at boot (docs/nvme.md).
    #[arg(long, conflicts_with = "install")]
    data_disk: bool,
    /// Never open a window, even when a display is available.
    #[arg(long)]
    headless: bool,
    /// Boot the existing image without rebuilding it.
    #[arg(long)]
    no_build: bool,
    /// Extra arguments passed to QEMU verbatim (after `--`).
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum IommuArg {
    None,
    Intel,
    Amd,
}

fn parse_mode(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WIDTHxHEIGHT, e.g. 1280x800")?;
    let w = w.parse().map_err(|_| format!("bad width {w:?}"))?;
    let h = h.parse().map_err(|_| format!("bad height {h:?}"))?;
    Ok((w, h))
}

/// `16G`, `8192M`.
fn parse_ram(s: &str) -> Result<u64, String> {
    bulkhead_policy::syntax::parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 16G or 8192M"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Image(args) => image(&args).map(|_| ()),
        Cmd::Run(args) => run(&args),
        Cmd::Bench(BenchCmd::LinuxBoot) => bench_linux_boot(),
        Cmd::Bench(BenchCmd::Switch { no_build }) => bench_switch(no_build),
        Cmd::Bench(BenchCmd::Exits { no_build, stages, bochs, cpus }) => bench_exits(no_build, stages, bochs, cpus),
        Cmd::Bench(BenchCmd::Net) => bench_net(),
        Cmd::Bench(BenchCmd::Xts) => bench_xts(),
        Cmd::Bench(BenchCmd::Disk { only }) => bench_disk(&only),
        Cmd::Bench(BenchCmd::Smp { no_build, runs, only }) => bench_smp(no_build, runs, only),
        Cmd::Mgmt(cmd) => images::mgmt::cli::run(cmd),
        Cmd::Policy(cmd) => policy(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn image(args: &ImageArgs) -> Result<PathBuf, String> {
    let artifacts = build::build_bare_metal().map_err(|e| e.to_string())?;
    let modules = if args.bare {
        Vec::new()
    } else {
        eprintln!("    Preparing the desktop guests (Debian kernel + busybox initramfs)");
        let guest = desktops::build_guest(&images::guest::default_cache_dir()).map_err(|e| e.to_string())?;
        eprintln!("    Guest kernel {} ({})", guest.kernel_version, guest.package_version);
        let mut modules = desktops::modules_with_bundle(&guest, image_bundle(args)?);
        modules.push(disk::BootModule {
            name: build::SERVICE_VM_MODULE.into(),
            source: disk::FileSource::Host(artifacts.service_vm_elf.clone()),
        });
        modules
    };
    let spec = disk::ImageSpec {
        loader_efi: artifacts.loader_efi,
        hypervisor_elf: artifacts.hypervisor_elf,
        modules,
        gop_mode: args.gop,
        cmdline: args.cmdline.clone(),
    };
    eprintln!("     Writing {}", args.out.display());
    let data = (!args.no_data_partition).then_some(args.data_partition);
    let bytes = disk::write_image_with_data(&spec, &args.out, data).map_err(|e| e.to_string())?;
    if let Some(answer) = &args.install_answer {
        let text = std::fs::read(answer).map_err(|e| format!("cannot read {}: {e}", answer.display()))?;
        disk::overwrite_esp_file(&args.out, images::install::ESP_ANSWER, &text)
            .map_err(|e| format!("cannot put the answer file on the image: {e}"))?;
        eprintln!("     Added {} as {}", answer.display(), images::install::ESP_ANSWER);
    }
    match data {
        Some(d) => eprintln!(
            "    Finished USB image, {} MiB ({} MiB data partition): {}",
            bytes >> 20,
            d >> 20,
            args.out.display()
        ),
        None => eprintln!("    Finished USB image, {} MiB: {}", bytes >> 20, args.out.display()),
    }
    Ok(args.out.clone())
}

/// The signed policy an image carries: --bundle, --policy signed with --key, or the
/// demo policy signed with the demo key.
fn image_bundle(args: &ImageArgs) -> Result<Vec<u8>, String> {
    if let Some(path) = &args.bundle {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        bulkhead_policy::Bundle::decode(&bytes)
            .and_then(|b| b.policy())
            .map_err(|e| format!("{}: {e}; sign it again with `cargo xtask policy sign`", path.display()))?;
        return Ok(bytes);
    }
    let (toml, key) = match (&args.policy, &args.key) {
        (Some(toml), Some(key)) => (toml.clone(), Some(key)),
        _ => (policy::demo_policy_path(), None),
    };
    let compiled = policy::compile_file(&toml, policy::compile::DEFAULT_RAM, policy::compile::now())?;
    for w in &compiled.warnings {
        eprintln!("{}:{w}", toml.display());
    }
    let bundle = match key {
        Some(key) => policy::tools::sign_with(&compiled.policy, &policy::keys::read_secret(key)?, Vec::new())?,
        None => policy::tools::sign_demo(&compiled.policy),
    };
    eprintln!(
        "    Policy {} version {}{}",
        toml.display(),
        compiled.policy.version,
        if key.is_none() { " (signed with the demo key)" } else { "" }
    );
    Ok(bundle)
}

fn policy(cmd: PolicyCmd) -> Result<(), String> {
    match cmd {
        PolicyCmd::Keygen { out } => {
            let (secret, public, key) = policy::keys::keygen(&out)?;
            println!("wrote {} (keep it offline; mode 0600) and {}", secret.display(), public.display());
            println!("key fingerprint {}", bulkhead_policy::device::fingerprint(&key.public()));
            Ok(())
        }
        PolicyCmd::Check { file, ram } => {
            let compiled = policy::compile_file(&file, ram, policy::compile::now())?;
            for w in &compiled.warnings {
                eprintln!("{}:{w}", file.display());
            }
            println!(
                "{}: policy version {} is valid: {} VMs, {} MiB of {} MiB",
                file.display(),
                compiled.policy.version,
                compiled.policy.vms.len(),
                compiled.policy.vms.iter().map(|v| u64::from(v.memory_mib)).sum::<u64>(),
                ram >> 20
            );
            Ok(())
        }
        PolicyCmd::Sign { file, key, endorsements, out, ram, issued_at, expires_at } => {
            let request = policy::tools::SignRequest {
                policy: file,
                key,
                endorsements,
                out,
                ram_bytes: ram,
                issued_at,
                expires_at,
            };
            let signed = policy::tools::sign(&request)?;
            eprint!("{}", signed.warnings);
            println!(
                "wrote {} ({} bytes): version {}, expires {}",
                request.out.display(),
                signed.bundle.len(),
                signed.policy.version,
                policy::tools::date(signed.policy.expires_at)
            );
            Ok(())
        }
        PolicyCmd::Show { bundle, key } => {
            print!("{}", policy::tools::show(&bundle, key.as_deref())?);
            Ok(())
        }
        PolicyCmd::Rotate { old, new, generation, out } => {
            let e = policy::keys::rotate(&old, &new, generation, &out)?;
            println!(
                "wrote {}: key {} endorses key {} (generation {generation}); sign with the new key and \
                 --endorsement {}",
                out.display(),
                bulkhead_policy::device::fingerprint(&e.old_key),
                bulkhead_policy::device::fingerprint(&e.new_key),
                out.display()
            );
            Ok(())
        }
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    if matches!(args.iommu, IommuArg::None) && !args.image.bare {
        return Err("the default machine gives the network card to the networking service VM through the \
                    IOMMU, so it cannot start without one; use --iommu intel (the default) or --iommu amd"
            .into());
    }
    let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().map_err(|e| e.to_string())?;
    let image_path = if args.no_build {
        if !args.image.out.is_file() {
            return Err(format!("{} does not exist; run without --no-build", args.image.out.display()));
        }
        args.image.out.clone()
    } else {
        image(&args.image)?
    };
    let vars = layout::target_dir().join("run-ovmf-vars.fd");
    std::fs::copy(&ovmf.vars_template, &vars)
        .map_err(|e| format!("cannot copy the OVMF variable store to {}: {e}", vars.display()))?;
    let has_display = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let mut config = MachineConfig::new(&image_path, &ovmf, vars);
    config.memory_mib = args.memory;
    config.cpus = args.cpus;
    config.iommu = match args.iommu {
        IommuArg::None => Iommu::None,
        IommuArg::Intel => Iommu::Intel,
        IommuArg::Amd => Iommu::Amd,
    };
    config.medium = if args.sata { BootMedium::Disk } else { BootMedium::UsbStick };
    config.display = if has_display && !args.headless { Display::Window } else { Display::Headless };
    config.extra_args = UPLINK_ARGS.iter().map(|a| a.to_string()).chain(args.qemu_args.iter().cloned()).collect();
    if args.install {
        return run_install(&qemu, config);
    }
    if args.data_disk {
        let path = layout::target_dir().join("run-data.img");
        if !path.is_file() {
            images::data_disk::create(&path, 2 << 30, 512)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            eprintln!("     Created {} (2 GiB, one Bulkhead data partition)", path.display());
        }
        config.nvme_disk = Some(path);
    }
    eprintln!(
        "     Booting in QEMU ({}): serial console below; quit with Ctrl-A X{}",
        if config.display == Display::Window { "window" } else { "headless" },
        if config.display == Display::Window { " or close the window" } else { "" }
    );
    let status = config.command(&qemu).status().map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    match status.code() {
        Some(0) | Some(images::qemu::EXIT_SUCCESS) => Ok(()),
        Some(images::qemu::EXIT_FAILURE) => Err("the hypervisor reported a failure (see the log above)".into()),
        _ => Err(format!("QEMU exited with {status}")),
    }
}

/// Installs from a stick onto an empty NVMe disk, then boots the disk alone.
fn run_install(qemu: &std::path::Path, mut config: MachineConfig) -> Result<(), String> {
    use images::install;
    let stick = layout::target_dir().join("run-install-stick.img");
    let nvme = layout::target_dir().join("run-nvme.img");
    install::make_install_stick(&config.image, &stick, &install::answer(false, 5))
        .map_err(|e| format!("cannot write {}: {e}", stick.display()))?;
    install::create_empty_disk(&nvme, 8 << 30).map_err(|e| format!("cannot create {}: {e}", nvme.display()))?;
    config.image = stick;
    config.medium = BootMedium::UsbStickNoBootIndex;
    config.nvme_disk = Some(nvme.clone());
    eprintln!("     Installing from the stick onto {} (8 GiB NVMe); the machine powers off when done", nvme.display());
    let status = config.command(qemu).status().map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    if status.code() != Some(0) {
        return Err(format!("the install run ended with {status}"));
    }
    eprintln!("     Booting from the NVMe disk alone (the stick is pulled out)");
    config.medium = BootMedium::None;
    let status = config.command(qemu).status().map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    match status.code() {
        Some(0) | Some(images::qemu::EXIT_SUCCESS) => Ok(()),
        _ => Err(format!("QEMU exited with {status}")),
    }
}

fn bench_linux_boot() -> Result<(), String> {
    use images::bench::{self, LineReader};
    use std::time::Duration;
    const MEMORY_MIB: u32 = 256;
    const GUEST_CMDLINE: &str = "console=ttyS0 panic=-1 quiet loglevel=4";
    let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().map_err(|e| e.to_string())?;
    eprintln!("    Preparing the guest (Debian kernel + busybox initramfs)");
    let guest = desktops::build_guest(&images::guest::default_cache_dir()).map_err(|e| e.to_string())?;

    eprintln!("    Booting {} directly under QEMU (icount)", guest.kernel_version);
    let mut direct = LineReader::spawn(bench::direct_linux_command(
        &qemu,
        &guest.kernel_path,
        &guest.initramfs_path,
        MEMORY_MIB,
        GUEST_CMDLINE,
    ))?;
    let ready = direct.wait_for("BULKHEAD-GUEST-READY", Duration::from_secs(600))?;
    let direct_s = bench::parse_uptime(&ready).ok_or("the direct boot printed no uptime")?;
    drop(direct);

    eprintln!("    Booting the same kernel inside Bulkhead (icount)");
    let one = [desktops::Desktop { name: "bench", label: "BENCH", colour: "#2980b9", memory_mib: MEMORY_MIB }];
    let artifacts = build::build_bare_metal().map_err(|e| e.to_string())?;
    let out = layout::target_dir().join("bench-linux-boot.img");
    // Same kernel command line as the direct boot.
    let bench = bulkhead_policy::model::Vm {
        restart: bulkhead_policy::model::Restart::Never,
        ..desktops::desktop_vm(&one[0], GUEST_CMDLINE)
    };
    let modules = desktops::modules_with_policy(&guest, &policy::fleet::demo_policy(vec![bench]));
    let spec = disk::ImageSpec {
        loader_efi: artifacts.loader_efi,
        hypervisor_elf: artifacts.hypervisor_elf,
        modules,
        gop_mode: Some((1280, 800)),
        cmdline: String::new(),
    };
    disk::write_image(&spec, &out).map_err(|e| e.to_string())?;
    let vars = fresh_bench_vars(&ovmf)?;
    let mut config = MachineConfig::new(&out, &ovmf, vars);
    config.memory_mib = 1024;
    config.cpus = 1;
    config.iommu = Iommu::None;
    config.icount = true;
    let mut nested = LineReader::spawn(config.command(&qemu))?;
    let ready = nested.wait_for("BULKHEAD-GUEST-READY", Duration::from_secs(900))?;
    let nested_s = bench::parse_uptime(&ready).ok_or("the guest printed no uptime")?;
    let boot = nested.wait_for("exits during boot:", Duration::from_secs(60))?;
    let idle = nested.wait_for("idle exits:", Duration::from_secs(600))?;
    drop(nested);

    let idle_rate = idle.split("idle exits: ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("?");
    println!("linux-boot ({}, {MEMORY_MIB} MiB, 1 vCPU, QEMU -icount shift=0,sleep=off)", guest.kernel_version);
    println!("  guest uptime at ready marker, direct   : {direct_s:.3} s");
    println!("  guest uptime at ready marker, Bulkhead : {nested_s:.3} s");
    println!("  ratio Bulkhead / direct                : {:.3}", nested_s / direct_s);
    println!("  exits during boot                      : {}", boot.split("exits during boot: ").nth(1).unwrap_or(""));
    println!("  idle shell, 10 s from 5 s after ready  : {idle_rate} exits per second");
    let by_reason = idle.split(" s: ").nth(1).unwrap_or("");
    println!("  idle exits by reason                   : {by_reason}");
    Ok(())
}

/// A fresh copy of OVMF's variable store for a benchmark boot.
fn fresh_bench_vars(ovmf: &host_tools::Ovmf) -> Result<std::path::PathBuf, String> {
    let vars = layout::target_dir().join("bench-ovmf-vars.fd");
    std::fs::copy(&ovmf.vars_template, &vars).map_err(|e| format!("cannot copy the OVMF variable store: {e}"))?;
    Ok(vars)
}

/// The machine the network and disk benchmarks boot `image` on: 1 GiB, one CPU, VT-d,
/// headless, under `-icount shift=0,sleep=off`, with fresh OVMF variables.
fn icount_bench_machine(image: &std::path::Path, ovmf: &host_tools::Ovmf) -> Result<MachineConfig, String> {
    let mut config = MachineConfig::new(image, ovmf, fresh_bench_vars(ovmf)?);
    config.memory_mib = 1024;
    config.cpus = 1;
    config.iommu = Iommu::Intel;
    config.display = Display::Headless;
    config.icount = true;
    Ok(config)
}

/// The default machine's uplink for the networking service VM: an 82574 (`e1000e`) on
/// QEMU's user network, where the host is 10.0.2.2. The service VM gets it through the
/// IOMMU, so a machine without one refuses to start the VMs.
const UPLINK_ARGS: [&str; 4] =
    ["-netdev", "user,id=uplink", "-device", "e1000e,netdev=uplink,bus=pcie.0,addr=0x5,romfile="];

fn bench_switch(no_build: bool) -> Result<(), String> {
    let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().map_err(|e| e.to_string())?;
    let args = ImageArgs {
        out: layout::target_dir().join("bench-switch.img"),
        gop: Some((1280, 800)),
        cmdline: String::new(),
        bare: false,
        install_answer: None,
        policy: None,
        key: None,
        bundle: None,
        data_partition: 0,
        no_data_partition: true,
    };
    let image_path = if no_build && args.out.is_file() { args.out.clone() } else { image(&args)? };
    let vars = fresh_bench_vars(&ovmf)?;
    let qmp = layout::target_dir().join("bench-qmp.sock");
    let _ = std::fs::remove_file(&qmp);
    let mut config = MachineConfig::new(&image_path, &ovmf, vars);
    config.memory_mib = 1536;
    config.cpus = 1;
    config.display = Display::Headless;
    config.icount = true;
    config.qmp_socket = Some(qmp.clone());
    // The default image's service VM needs its uplink NIC and the IOMMU.
    config.iommu = Iommu::Intel;
    config.extra_args = UPLINK_ARGS.iter().map(|a| a.to_string()).collect();
    eprintln!("     Booting under -icount (several minutes)");
    let table = images::switch_bench::run(config.command(&qemu), &qmp)?;
    println!("{table}");
    Ok(())
}

fn bench_smp(no_build: bool, runs: u32, only: Option<SmpPart>) -> Result<(), String> {
    use images::smp_bench;
    let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().map_err(|e| e.to_string())?;
    // Under -icount QEMU runs the emulated CPUs one at a time, in turns of up to 100 ms
    // of guest time, so guests on several CPUs would measure those turns: that image
    // keeps every vCPU on the boot CPU (`guests=boot-cpu`).
    let out = layout::target_dir().join("bench-smp.img");
    let out_icount = layout::target_dir().join("bench-smp-icount.img");
    if !(no_build && out.is_file() && out_icount.is_file()) {
        let artifacts = build::build_bare_metal().map_err(|e| e.to_string())?;
        eprintln!("    Preparing the desktop guests (Debian kernel + busybox initramfs)");
        let guest = desktops::build_guest(&images::guest::default_cache_dir()).map_err(|e| e.to_string())?;
        for (path, cmdline) in [(&out, ""), (&out_icount, "guests=boot-cpu")] {
            let spec = disk::ImageSpec {
                loader_efi: artifacts.loader_efi.clone(),
                hypervisor_elf: artifacts.hypervisor_elf.clone(),
                modules: desktops::modules_with_policy(&guest, &smp_bench::policy()),
                gop_mode: Some((1280, 800)),
                cmdline: cmdline.to_string(),
            };
            eprintln!("     Writing {}", path.display());
            disk::write_image(&spec, path).map_err(|e| e.to_string())?;
        }
    }
    let machine = |image: &std::path::Path| -> Result<MachineConfig, String> {
        let mut config = MachineConfig::new(image, &ovmf, fresh_bench_vars(&ovmf)?);
        config.memory_mib = 1536;
        config.cpus = 4;
        config.display = Display::Headless;
        Ok(config)
    };
    let qmp = layout::target_dir().join("bench-smp-qmp.sock");
    let icount = if only != Some(SmpPart::Wall) {
        let _ = std::fs::remove_file(&qmp);
        let mut config = machine(&out_icount)?;
        config.icount = true;
        config.qmp_socket = Some(qmp.clone());
        eprintln!("     Booting under -icount, -smp 4, every vCPU on the boot CPU (about 7 minutes)");
        let log = layout::target_dir().join("bench-smp-icount.log");
        let figures = smp_bench::run_icount(config.command(&qemu), &qmp, &log);
        eprintln!("     serial output: {}", log.display());
        Some(figures)
    } else {
        None
    };
    let wall = if only != Some(SmpPart::Icount) {
        let _ = std::fs::remove_file(&qmp);
        let mut config = machine(&out)?;
        config.qmp_socket = Some(qmp.clone());
        config.extra_args = ["-accel", "tcg,thread=multi"].iter().map(|a| a.to_string()).collect();
        eprintln!("     Booting under multi-threaded TCG, -smp 4 (about 6 minutes)");
        let log = layout::target_dir().join("bench-smp-wall.log");
        let figures = smp_bench::run_wall(config.command(&qemu), &qmp, runs, &log);
        eprintln!("     serial output: {}", log.display());
        Some(figures)
    } else {
        None
    };
    println!("{}", smp_bench::report(icount.as_ref(), wall.as_ref()));
    Ok(())
}

fn bench_xts() -> Result<(), String> {
    use bulkhead_diskcrypt::{Backend, KdfParams};
    use images::xts_bench::{self, XtsFigure};
    eprintln!("    Encrypting {} MiB per pass, at least 1 s per figure", xts_bench::BUFFER_BYTES >> 20);
    let figures = xts_bench::xts_figures()?;
    println!("xts (AES-256-XTS, one core, {})", xts_bench::cpu_model());
    if !figures.iter().any(|f| f.backend == Backend::AesNi) {
        println!("  this CPU has no AES-NI (CPUID.1:ECX bit 25 clear): software only");
    }
    for f in &figures {
        let name = if f.backend == Backend::AesNi { "AES-NI  " } else { "software" };
        let op = if f.decrypt { "decrypt" } else { "encrypt" };
        let per_call = if f.bytes_per_call == 512 {
            "512 B per call  ".into()
        } else {
            format!("{} KiB per call ", f.bytes_per_call >> 10)
        };
        println!("  {name} {op}, {per_call}: {:8.1} MB/s", f.mb_per_s);
    }
    let find = |b: Backend, call: usize| -> Option<&XtsFigure> {
        figures.iter().find(|f| f.backend == b && f.bytes_per_call == call && !f.decrypt)
    };
    for call in [512, 64 << 10] {
        if let (Some(ni), Some(soft)) = (find(Backend::AesNi, call), find(Backend::Software, call)) {
            let per_call = if call == 512 { "512 B".to_string() } else { format!("{} KiB", call >> 10) };
            println!("  ratio AES-NI / software, encrypt, {per_call} per call: {:.1}", ni.mb_per_s / soft.mb_per_s);
        }
    }
    let p = KdfParams::LAPTOP;
    let seconds = xts_bench::kek_seconds()?;
    println!("  Argon2id KEK ({} MiB, {} passes, {} lane): {seconds:.2} s", p.memory_kib >> 10, p.iterations, p.lanes);
    Ok(())
}

fn bench_net() -> Result<(), String> {
    use images::net_bench::{self, NetTable};
    let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().map_err(|e| e.to_string())?;
    let artifacts = build::build_bare_metal().map_err(|e| e.to_string())?;
    eprintln!("    Preparing the guest (Debian's generic kernel: virtio_net and e1000e)");
    let guest = images::guest::build_linux_guest(
        &images::guest::default_cache_dir(),
        images::guest::Flavour::Generic,
        &["virtio_pci", "virtio_net", "e1000e"],
    )
    .map_err(|e| e.to_string())?;
    let desktop = desktops::Desktop { name: "bench", label: "BENCH", colour: "#2980b9", memory_mib: 256 };
    let body: Vec<u8> = (0..net_bench::DOWNLOAD_BYTES).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let port = net_bench::serve(std::sync::Arc::new(body))?;
    let boot = |name: &str, vms: Vec<bulkhead_policy::model::Vm>| -> Result<std::process::Command, String> {
        let mut modules = desktops::modules_with_policy(&guest, &policy::fleet::demo_policy(vms));
        modules.push(disk::BootModule {
            name: build::SERVICE_VM_MODULE.into(),
            source: disk::FileSource::Host(artifacts.service_vm_elf.clone()),
        });
        let out = layout::target_dir().join(format!("bench-net-{name}.img"));
        let spec = disk::ImageSpec {
            loader_efi: artifacts.loader_efi.clone(),
            hypervisor_elf: artifacts.hypervisor_elf.clone(),
            modules,
            gop_mode: Some((1280, 800)),
            cmdline: String::new(),
        };
        disk::write_image(&spec, &out).map_err(|e| e.to_string())?;
        let mut config = icount_bench_machine(&out, &ovmf)?;
        config.extra_args = UPLINK_ARGS.iter().map(|a| a.to_string()).collect();
        Ok(config.command(&qemu))
    };
    use bulkhead_policy::model::{NetRule, Restart, Vm};
    let through_service = vec![
        Vm {
            network: policy::fleet::network(desktops::SERVICE_VM, NetRule::Internet, &[]),
            ..desktops::desktop_vm(&desktop, desktops::NETWORKED_CMDLINE)
        },
        Vm { restart: Restart::Never, ..desktops::service_vm() },
    ];
    eprintln!("     Through the service VM, under -icount (several minutes)");
    let service = net_bench::run_path(boot("service", through_service)?, "bench", Some("net"), port)?;
    // Kept if the second run fails.
    eprintln!("     Through the service VM: {service:?}");
    let direct_line = vec![Vm {
        devices: vec![desktops::UPLINK_NIC.into()],
        ..desktops::desktop_vm(&desktop, desktops::NETWORKED_CMDLINE)
    }];
    eprintln!("     The NIC passed through to the desktop, under -icount (several minutes)");
    let direct = net_bench::run_path(boot("direct", direct_line)?, "bench", None, port)?;
    println!("{}", NetTable { service, direct });
    Ok(())
}

fn bench_disk(only: &[DiskPart]) -> Result<(), String> {
    use bulkhead_policy::model::{Disk, DiskMode, Restart, Vm};
    use images::disk_bench::{self, DiskBackend, DiskPath, DiskTable};
    let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().map_err(|e| e.to_string())?;
    let artifacts = build::build_bare_metal().map_err(|e| e.to_string())?;
    eprintln!("    Preparing the guest (the desktops' kernel: virtio_blk and nvme)");
    let modules: Vec<&str> = desktops::DESKTOP_MODULES.iter().copied().chain(["nvme"]).collect();
    let guest =
        images::guest::build_linux_guest(&images::guest::default_cache_dir(), images::guest::Flavour::Cloud, &modules)
            .map_err(|e| e.to_string())?;
    let desktop = desktops::Desktop { name: "bench", label: "BENCH", colour: "#2980b9", memory_mib: 256 };
    let bench_vm = Vm { restart: Restart::Never, ..desktops::desktop_vm(&desktop, "console=ttyS0 quiet") };
    let boot = |path: DiskPath| -> Result<std::process::Command, String> {
        let vm = match path {
            DiskPath::Virtio(_) => Vm {
                disk: Some(Disk { size_mib: disk_bench::DISK_MIB as u32, mode: DiskMode::Persistent }),
                ..bench_vm.clone()
            },
            DiskPath::PassthroughNvme => Vm { devices: vec![disk_bench::NVME_DEVICE.into()], ..bench_vm.clone() },
        };
        let modules = desktops::modules_with_policy(&guest, &policy::fleet::demo_policy(vec![vm]));
        let tag = match path {
            DiskPath::Virtio(DiskBackend::Ram) => "virtio",
            DiskPath::Virtio(DiskBackend::NvmePlain) => "virtio-nvme-plain",
            DiskPath::Virtio(DiskBackend::NvmeEncrypted) => "virtio-nvme-xts",
            DiskPath::PassthroughNvme => "nvme",
        };
        let out = layout::target_dir().join(format!("bench-disk-{tag}.img"));
        let spec = disk::ImageSpec {
            loader_efi: artifacts.loader_efi.clone(),
            hypervisor_elf: artifacts.hypervisor_elf.clone(),
            modules,
            gop_mode: Some((1280, 800)),
            cmdline: match path {
                DiskPath::Virtio(backend) => backend.cmdline().into(),
                DiskPath::PassthroughNvme => String::new(),
            },
        };
        disk::write_image(&spec, &out).map_err(|e| e.to_string())?;
        let mut config = icount_bench_machine(&out, &ovmf)?;
        if let DiskPath::Virtio(DiskBackend::NvmePlain | DiskBackend::NvmeEncrypted) = path {
            // A fresh laptop drive each run: the volume is made (and wiped at both ends)
            // at boot, so the guest makes its filesystem as on first use.
            let drive = layout::target_dir().join("bench-disk-data.raw");
            let _ = std::fs::remove_file(&drive);
            images::data_disk::create(&drive, (2 * disk_bench::DISK_MIB + 64) << 20, 512)
                .map_err(|e| format!("cannot create {}: {e}", drive.display()))?;
            config.nvme_disk = Some(drive);
        }
        if path == DiskPath::PassthroughNvme {
            let nvme = layout::target_dir().join("bench-disk-nvme0.raw");
            images::install::create_empty_disk(&nvme, disk_bench::DISK_MIB << 20)
                .map_err(|e| format!("cannot create {}: {e}", nvme.display()))?;
            // After the IOMMU on QEMU's command line (not `nvme_disk`, which comes
            // before it): a device created before the IOMMU bypasses its DMA
            // translation and interrupt remapping.
            config.extra_args = vec![
                "-drive".into(),
                format!("format=raw,file={},if=none,id=benchnvme", nvme.display()),
                "-device".into(),
                "nvme,drive=benchnvme,serial=BENCH0001".into(),
            ];
        }
        Ok(config.command(&qemu))
    };
    let mut table = DiskTable::default();
    let part = |path: DiskPath| match path {
        DiskPath::Virtio(DiskBackend::Ram) => DiskPart::Ram,
        DiskPath::Virtio(DiskBackend::NvmePlain) => DiskPart::Plain,
        DiskPath::Virtio(DiskBackend::NvmeEncrypted) => DiskPart::Xts,
        DiskPath::PassthroughNvme => DiskPart::Direct,
    };
    // The ratios need the passed-through drive: it is measured whatever `only` says.
    let wanted = |path: DiskPath| only.is_empty() || path == DiskPath::PassthroughNvme || only.contains(&part(path));
    let paths = DiskBackend::ALL.into_iter().map(DiskPath::Virtio).chain([DiskPath::PassthroughNvme]);
    for path in paths.filter(|p| wanted(*p)) {
        let result = boot(path).and_then(|command| {
            eprintln!("     {}, under -icount (a few minutes)", path.name());
            disk_bench::run_path(command, "bench", path)
        });
        if let Err(e) = &result {
            eprintln!("     {}: {e}", path.name());
        }
        table.rows.push((path, result));
    }
    println!("{table}");
    Ok(())
}

fn bench_exits(no_build: bool, stages: bool, bochs: bool, cpus: u32) -> Result<(), String> {
    let name = match (stages, bochs) {
        (false, false) => "bench-exits.img",
        (true, false) => "bench-exits-stages.img",
        (false, true) => "bench-exits-bochs.img",
        (true, true) => "bench-exits-stages-bochs.img",
    };
    let out = layout::target_dir().join(name);
    if !(no_build && out.is_file()) {
        let artifacts = build::build_bare_metal().map_err(|e| e.to_string())?;
        let payloads = build::build_payloads().map_err(|e| e.to_string())?;
        let exits = bulkhead_policy::model::Vm {
            label: "Exit benchmark".into(),
            ..policy::fleet::payload("exits", "exits", 16)
        };
        let spec = disk::ImageSpec {
            loader_efi: artifacts.loader_efi,
            hypervisor_elf: artifacts.hypervisor_elf,
            modules: vec![
                policy::fleet::demo_module(&policy::fleet::demo_policy(vec![exits])),
                disk::BootModule { name: "exits".into(), source: disk::FileSource::Host(payloads.join("exits")) },
            ],
            gop_mode: Some((1280, 800)),
            cmdline: if stages { "exit-stages" } else { "" }.to_string(),
        };
        eprintln!("     Writing {}", out.display());
        disk::write_image(&spec, &out).map_err(|e| e.to_string())?;
    }
    if bochs {
        let dir = layout::target_dir().join("bench-exits-bochs");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let command = images::bochs::prepare(
            &dir,
            &out,
            512,
            &images::bochs::BochsSerial::Stdout,
            images::bochs::BochsDisplay::Headless,
        )?;
        eprintln!("     Booting under Bochs (VMX; a few minutes)");
        let table = images::exits_bench::run(command, images::exits_bench::BOCHS)?;
        println!("{table}");
        return Ok(());
    }
    let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().map_err(|e| e.to_string())?;
    let vars = fresh_bench_vars(&ovmf)?;
    let mut config = MachineConfig::new(&out, &ovmf, vars);
    config.memory_mib = 512;
    config.cpus = cpus.max(1);
    config.iommu = Iommu::None;
    config.display = Display::Headless;
    config.icount = true;
    eprintln!("     Booting under -icount (about a minute)");
    let table = images::exits_bench::run(config.command(&qemu), images::exits_bench::QEMU_ICOUNT)?;
    println!("{table}");
    Ok(())
}
