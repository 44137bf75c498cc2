//! Argument sets for each mode, checked against QEMU's documented forms
//! (docs/system/i386/amd-memory-encryption.rst, docs/system/i386/tdx.rst).

use std::num::NonZeroU8;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tsuba_policy::Initdata;

use super::*;
use crate::config::{AccelChoice, Firmware, MemoryMib};

const INITDATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"a\" = \"b\"\n";

fn config(mode: Mode) -> LaunchConfig {
    LaunchConfig {
        mode,
        firmware: Firmware {
            boot: PathBuf::from("/fw/boot.fd"),
            measured: PathBuf::from("/fw/measured.fd"),
        },
        kernel: PathBuf::from("/k/vmlinuz"),
        initrd: PathBuf::from("/k/initrd"),
        extra_cmdline: "quiet".into(),
        vcpus: NonZeroU8::new(2).unwrap(),
        memory: MemoryMib::new(256).unwrap(),
        initdata: Some(Initdata::parse(INITDATA).unwrap()),
        accel: AccelChoice::Auto,
        agent_transport: AgentTransport::Serial,
        snp_vcpu_type: "EPYC-v4".into(),
        network: None,
    }
}

fn paths() -> RunPaths {
    RunPaths {
        console_log: PathBuf::from("/run/t/console.log"),
        agent_socket: PathBuf::from("/run/t/agent.sock"),
        teesim_socket: None,
        vsock_cid: None,
    }
}

/// The value following `flag`, for each occurrence.
fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

fn one<'a>(args: &'a [String], flag: &str) -> &'a str {
    let v = values(args, flag);
    assert_eq!(v.len(), 1, "{flag} given {} times in {args:?}", v.len());
    v[0]
}

#[test]
fn sim_mode_boots_plain_firmware_under_tcg_without_tee_objects() {
    let args = command_line(&config(Mode::SimSnp), Accel::Tcg, &paths());
    assert_eq!(one(&args, "-machine"), "q35");
    assert_eq!(one(&args, "-accel"), "tcg");
    assert_eq!(one(&args, "-cpu"), "max");
    assert_eq!(one(&args, "-smp"), "2");
    assert_eq!(one(&args, "-m"), "256M");
    assert_eq!(one(&args, "-bios"), "/fw/boot.fd");
    assert_eq!(one(&args, "-kernel"), "/k/vmlinuz");
    assert_eq!(one(&args, "-initrd"), "/k/initrd");
    assert_eq!(
        one(&args, "-append"),
        "console=ttyS0 panic=-1 tsuba.agent.transport=serial quiet"
    );
    assert!(values(&args, "-object").is_empty(), "{args:?}");
    assert!(args.contains(&"-no-reboot".to_owned()));
    assert!(args.contains(&"-nodefaults".to_owned()));
}

#[test]
fn sim_mode_under_kvm_uses_the_host_cpu() {
    let args = command_line(&config(Mode::SimTdx), Accel::Kvm, &paths());
    assert_eq!(one(&args, "-accel"), "kvm");
    assert_eq!(one(&args, "-cpu"), "host");
}

#[test]
fn agent_port_is_a_named_virtserialport_on_a_waiting_socket() {
    let args = command_line(&config(Mode::None), Accel::Tcg, &paths());
    let devices = values(&args, "-device");
    assert_eq!(devices[0], "virtio-serial-pci,id=vser0");
    assert_eq!(
        devices[1],
        "virtserialport,bus=vser0.0,chardev=agent,name=tsuba.agent"
    );
    let chardevs = values(&args, "-chardev");
    assert!(chardevs.contains(&"file,id=console,path=/run/t/console.log"));
    assert!(chardevs.contains(&"socket,id=agent,path=/run/t/agent.sock,server=on,wait=on"));
    assert_eq!(one(&args, "-serial"), "chardev:console");
}

#[test]
fn teesim_port_is_added_only_when_a_device_is_served() {
    let mut p = paths();
    let args = command_line(&config(Mode::SimSnp), Accel::Tcg, &p);
    assert!(!args.iter().any(|a| a.contains("tsuba.teesim")));
    p.teesim_socket = Some(PathBuf::from("/run/t/teesim.sock"));
    let args = command_line(&config(Mode::SimSnp), Accel::Tcg, &p);
    assert!(
        values(&args, "-device")
            .contains(&"virtserialport,bus=vser0.0,chardev=teesim,name=tsuba.teesim")
    );
}

#[test]
fn snp_mode_has_the_sev_snp_guest_object_with_kernel_hashes_and_host_data() {
    let config = config(Mode::Snp);
    let args = command_line(&config, Accel::Kvm, &paths());
    assert_eq!(
        one(&args, "-machine"),
        "q35,confidential-guest-support=cgs0,memory-backend=ram0"
    );
    assert_eq!(one(&args, "-cpu"), "EPYC-v4");
    let host_data = config.initdata.as_ref().unwrap().host_data();
    let objects = values(&args, "-object");
    assert_eq!(
        objects,
        vec![
            "memory-backend-memfd,id=ram0,size=256M,share=true,prealloc=false".to_owned(),
            format!(
                "sev-snp-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,\
                 kernel-hashes=on,host-data={}",
                STANDARD.encode(host_data.as_bytes())
            ),
        ]
    );
    // HOST_DATA is 32 bytes on the wire.
    assert_eq!(STANDARD.encode(host_data.as_bytes()).len(), 44);
}

#[test]
fn snp_mode_without_initdata_sets_no_host_data() {
    let mut config = config(Mode::Snp);
    config.initdata = None;
    let args = command_line(&config, Accel::Kvm, &paths());
    assert!(
        !values(&args, "-object")
            .iter()
            .any(|o| o.contains("host-data"))
    );
}

#[test]
fn tdx_mode_has_split_irqchip_and_mrconfigid() {
    let config = config(Mode::Tdx);
    let args = command_line(&config, Accel::Kvm, &paths());
    assert_eq!(
        one(&args, "-machine"),
        "q35,kernel-irqchip=split,confidential-guest-support=cgs0"
    );
    assert_eq!(one(&args, "-cpu"), "host");
    let mr = config.initdata.as_ref().unwrap().mr_config_id();
    assert_eq!(
        values(&args, "-object"),
        vec![format!(
            "tdx-guest,id=cgs0,mrconfigid={}",
            STANDARD.encode(mr.as_bytes())
        )]
    );
}

#[test]
fn vsock_transport_adds_the_device_and_drops_the_agent_port() {
    let mut config = config(Mode::SimSnp);
    config.agent_transport = AgentTransport::Vsock;
    let mut p = paths();
    p.vsock_cid = Some(42);
    let args = command_line(&config, Accel::Tcg, &p);
    let devices = values(&args, "-device");
    assert_eq!(devices, vec!["vhost-vsock-pci,id=vsock0,guest-cid=42"]);
    assert!(one(&args, "-append").contains("tsuba.agent.transport=vsock"));
}

#[test]
fn no_network_device_unless_the_config_asks_and_then_user_networking_on_virtio() {
    let args = command_line(&config(Mode::SimSnp), Accel::Tcg, &paths());
    assert!(values(&args, "-netdev").is_empty(), "{args:?}");
    assert!(
        !values(&args, "-device")
            .iter()
            .any(|d| d.starts_with("virtio-net")),
        "{args:?}"
    );

    let mut networked = config(Mode::SimSnp);
    networked.network = Some(crate::config::Network {
        backend: crate::config::NetworkBackend::User,
    });
    let args = command_line(&networked, Accel::Tcg, &paths());
    assert_eq!(one(&args, "-netdev"), "user,id=net0,restrict=off,ipv6=off");
    let nics: Vec<_> = values(&args, "-device")
        .into_iter()
        .filter(|d| d.starts_with("virtio-net"))
        .collect();
    assert_eq!(nics, ["virtio-net-pci,netdev=net0,romfile="]);
    // The guest learns its address from the measured command line, which QEMU boots.
    let append = one(&args, "-append");
    assert!(
        append.contains(" tsuba.agent.net=10.0.2.15/24,gw=10.0.2.2"),
        "{append}"
    );
    assert_eq!(append, networked.kernel_cmdline());
}

/// Splits a QEMU option list as QEMU's option parser does: at each single comma, with `,,`
/// read as one literal comma.
fn qemu_option_list(list: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                items.last_mut().unwrap().push(',');
            }
            ',' => items.push(String::new()),
            c => items.last_mut().unwrap().push(c),
        }
    }
    items
}

/// Run paths whose folder names try to add options: a bare comma, `id=`, `server=off`, and a
/// second `path=` (QEMU keeps the last one, so it would redirect the file).
fn hostile_paths() -> RunPaths {
    RunPaths {
        console_log: PathBuf::from("/run/a,b/console.log"),
        agent_socket: PathBuf::from("/run/x,id=evil,server=off/agent.sock"),
        teesim_socket: Some(PathBuf::from("/run/y,path=/tmp/evil.sock/teesim.sock")),
        vsock_cid: None,
    }
}

#[test]
fn commas_in_run_paths_are_doubled_so_they_cannot_add_options() {
    let args = command_line(&config(Mode::SimSnp), Accel::Tcg, &hostile_paths());
    assert_eq!(
        values(&args, "-chardev"),
        [
            "file,id=console,path=/run/a,,b/console.log",
            "socket,id=agent,path=/run/x,,id=evil,,server=off/agent.sock,server=on,wait=on",
            "socket,id=teesim,path=/run/y,,path=/tmp/evil.sock/teesim.sock,server=on,wait=on",
        ]
    );
    // Read back as QEMU reads them: each list has only its own options, and the whole path.
    let chardevs = values(&args, "-chardev");
    assert_eq!(
        qemu_option_list(chardevs[0]),
        ["file", "id=console", "path=/run/a,b/console.log"]
    );
    assert_eq!(
        qemu_option_list(chardevs[1]),
        [
            "socket",
            "id=agent",
            "path=/run/x,id=evil,server=off/agent.sock",
            "server=on",
            "wait=on"
        ]
    );
    assert_eq!(
        qemu_option_list(chardevs[2]),
        [
            "socket",
            "id=teesim",
            "path=/run/y,path=/tmp/evil.sock/teesim.sock",
            "server=on",
            "wait=on"
        ]
    );
    // The device and serial options that name the chardevs are unchanged.
    assert_eq!(one(&args, "-serial"), "chardev:console");
    assert!(
        values(&args, "-device")
            .contains(&"virtserialport,bus=vser0.0,chardev=agent,name=tsuba.agent")
    );
}

#[test]
fn option_value_doubles_every_comma_and_nothing_else() {
    assert_eq!(option_value("plain/path"), "plain/path");
    assert_eq!(option_value(","), ",,");
    assert_eq!(option_value(",,"), ",,,,");
    assert_eq!(option_value("a,,b,=c"), "a,,,,b,,=c");
    assert_eq!(qemu_option_list(&option_value("a,,b,=c")), ["a,,b,=c"]);
}

#[test]
fn whole_value_arguments_keep_their_commas_as_written() {
    // QEMU opens -bios, -kernel and -initrd as written and passes -append whole (checked with
    // QEMU 10.0: `-kernel /x/a,b` fails with "could not open kernel file '/x/a,b'"), so
    // doubling here would name another file.
    let mut config = config(Mode::SimSnp);
    config.firmware.boot = PathBuf::from("/fw/b,readonly=on.fd");
    config.kernel = PathBuf::from("/k/a,id=x");
    config.initrd = PathBuf::from("/k/i,,x");
    let args = command_line(&config, Accel::Tcg, &paths());
    assert_eq!(one(&args, "-bios"), "/fw/b,readonly=on.fd");
    assert_eq!(one(&args, "-kernel"), "/k/a,id=x");
    assert_eq!(one(&args, "-initrd"), "/k/i,,x");
}

/// Real QEMU: a console log under a folder named `run,path=<dir>/evil` is written there, and
/// not to `<dir>/evil/console.log`, where an unescaped second `path=` would send it.
#[test]
fn qemu_writes_the_console_log_under_the_comma_folder_and_nowhere_else() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    let run = PathBuf::from(format!(
        "{}/run,path={}",
        dir.path().display(),
        evil.display()
    ));
    std::fs::create_dir_all(&run).unwrap();
    let log = run.join("console.log");

    let mut args: Vec<String> = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "none",
        "-monitor",
        "stdio",
    ]
    .map(String::from)
    .to_vec();
    Console { log: log.clone() }.push_args(&mut args);
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (scripts/setup installs it)");
    qemu.stdin.take().unwrap().write_all(b"quit\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = qemu.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            panic!("qemu did not quit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(log.is_file(), "console log not at {}", log.display());
    assert_eq!(
        std::fs::read_dir(&evil).unwrap().count(),
        0,
        "QEMU wrote into {}",
        evil.display()
    );
}
