//! `virtualization` step: host, virtual machine or container, and which kind.
//!
//! `systemd-detect-virt` where the host has it; elsewhere the evidence it
//! uses itself, read from files: PID 1's `container=`, `/.dockerenv`,
//! `/run/.containerenv`, `/proc/vz`, a WSL kernel, DMI vendor strings,
//! `/sys/hypervisor/type`, the CPUID hypervisor vendor (lscpu) or flag
//! (`/proc/cpuinfo`); on the BSDs `kern.vm_guest` and `security.jail.jailed`.
//! Never cgroup paths: they name nothing on cgroup v2 hosts.

use super::{ParseError, lines, named_sections, truncate_chars};
use crate::model::facts::{Virtualization, VirtualizationRole};

/// Prints `@@sdv` (systemd-detect-virt's answer, container first, `none`
/// included) where it exists; else the evidence sections `@@files`
/// (marker paths that exist), `@@container` (`/run/systemd/container`, PID
/// 1's `container=`), `@@osrelease`, `@@dmi` (`key=value`), `@@hypervisor`
/// (`/sys/hypervisor/type`), `@@lscpu-hypervisor`, `@@cpu-flags`,
/// `@@sysctl`. Always exits 0: no evidence at all is itself an answer.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
if command -v systemd-detect-virt >/dev/null 2>&1 &&
    v=$(systemd-detect-virt 2>/dev/null </dev/null); [ -n "$v" ]; then
  echo @@sdv
  printf '%s\n' "$v"
  exit 0
fi
echo @@files
for f in /.dockerenv /run/.containerenv /proc/vz /proc/bc /proc/xen /dev/lxd/sock; do
  [ -e "$f" ] && echo "$f"
done
echo @@container
[ -r /run/systemd/container ] && head -n 1 /run/systemd/container 2>/dev/null </dev/null
[ -r /proc/1/environ ] && tr '\0' '\n' 2>/dev/null </proc/1/environ | grep '^container=' | head -n 1
echo @@osrelease
cat /proc/sys/kernel/osrelease 2>/dev/null </dev/null
echo @@dmi
for k in sys_vendor product_name product_version board_vendor bios_vendor chassis_vendor; do
  [ -r "/sys/class/dmi/id/$k" ] && printf '%s=%s\n' "$k" "$(head -n 1 "/sys/class/dmi/id/$k" 2>/dev/null </dev/null)"
done
echo @@hypervisor
cat /sys/hypervisor/type 2>/dev/null </dev/null
echo @@lscpu-hypervisor
command -v lscpu >/dev/null 2>&1 && lscpu 2>/dev/null </dev/null | grep -E '^Hypervisor vendor:'
echo @@cpu-flags
[ -r /proc/cpuinfo ] && grep -m 1 -E '^flags[[:space:]]*:' /proc/cpuinfo 2>/dev/null </dev/null | grep -o -w hypervisor
if [ ! -d /proc/1 ] && command -v sysctl >/dev/null 2>&1; then
  echo @@sysctl
  for k in security.jail.jailed kern.vm_guest kern.hv_vmm_present; do
    sysctl "$k" 2>/dev/null </dev/null
  done
fi
exit 0
"#;

const MAX_TYPE: usize = 64;

/// systemd-detect-virt's container types; every other answer but `none`
/// is a virtual machine.
const CONTAINERS: &[&str] = &[
    "openvz",
    "lxc",
    "lxc-libvirt",
    "systemd-nspawn",
    "docker",
    "podman",
    "rkt",
    "wsl",
    "proot",
    "pouch",
    "container-other",
];

/// systemd-detect-virt's DMI table: a vendor or product prefix and its type.
const DMI_VENDORS: &[(&str, &str)] = &[
    ("KVM", "kvm"),
    ("OpenStack", "kvm"),
    ("KubeVirt", "kvm"),
    ("Amazon EC2", "amazon"),
    ("QEMU", "qemu"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Oracle Corporation", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Apple Virtualization", "apple"),
    ("Google Compute Engine", "google"),
];

/// lscpu's `Hypervisor vendor:` (from CPUID) to systemd's words.
const CPUID_VENDORS: &[(&str, &str)] = &[
    ("KVM", "kvm"),
    ("Microsoft", "microsoft"),
    ("VMware", "vmware"),
    ("Xen", "xen"),
    ("bhyve", "bhyve"),
    ("QNX", "qnx"),
    ("ACRN", "acrn"),
    ("Parallels", "parallels"),
];

/// FreeBSD `kern.vm_guest` to systemd's words.
const VM_GUESTS: &[(&str, &str)] = &[
    ("kvm", "kvm"),
    ("vmware", "vmware"),
    ("hv", "microsoft"),
    ("xen", "xen"),
    ("bhyve", "bhyve"),
    ("vbox", "oracle"),
    ("parallels", "parallels"),
    ("generic", "vm-other"),
    ("nvmm", "vm-other"),
];

fn answer(role: VirtualizationRole, kind: &str, source: &str) -> Virtualization {
    Virtualization {
        role,
        kind: truncate_chars(kind, MAX_TYPE),
        source: source.to_string(),
    }
}

/// A word of systemd's vocabulary: lowercase letters, digits, `-`.
fn word(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()
        && s.len() <= MAX_TYPE
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    .then_some(s)
}

/// Err only when the output has none of the script's sections.
pub fn parse(stdout: &str) -> Result<Virtualization, ParseError> {
    let secs = named_sections(stdout);
    if secs.is_empty() {
        return Err(ParseError::new("no virtualization evidence printed"));
    }
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    let first = |n: &str| get(n).and_then(|b| lines(b).map(str::trim).find(|l| !l.is_empty()));
    use VirtualizationRole::{Container, Host, Vm};

    if get("sdv").is_some() {
        return Ok(match first("sdv").and_then(word).unwrap_or("none") {
            "none" => answer(Host, "none", "systemd-detect-virt"),
            kind if CONTAINERS.contains(&kind) => answer(Container, kind, "systemd-detect-virt"),
            kind => answer(Vm, kind, "systemd-detect-virt"),
        });
    }

    // Containers first: a container in a VM is a container.
    let files: Vec<&str> = get("files")
        .map(|b| lines(b).map(str::trim).collect())
        .unwrap_or_default();
    let has = |f: &str| files.contains(&f);
    for line in lines(get("container").unwrap_or("")) {
        let v = line.trim();
        let v = v.strip_prefix("container=").unwrap_or(v);
        if let Some(kind) = word(v) {
            let kind = if kind == "oci" {
                "container-other"
            } else {
                kind
            };
            return Ok(answer(Container, kind, "container-env"));
        }
    }
    if has("/.dockerenv") {
        return Ok(answer(Container, "docker", "dockerenv"));
    }
    if has("/run/.containerenv") {
        return Ok(answer(Container, "podman", "containerenv"));
    }
    if has("/proc/vz") && !has("/proc/bc") {
        return Ok(answer(Container, "openvz", "proc-vz"));
    }
    if first("osrelease")
        .is_some_and(|r| r.contains("Microsoft") || r.contains("microsoft") || r.contains("WSL"))
    {
        return Ok(answer(Container, "wsl", "wsl-kernel"));
    }
    let sysctl = |key: &str| {
        get("sysctl").and_then(|b| {
            lines(b).find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim())
            })
        })
    };
    if sysctl("security.jail.jailed") == Some("1") {
        return Ok(answer(Container, "jail", "sysctl"));
    }

    // Virtual machines.
    let dmi: Vec<(&str, &str)> = lines(get("dmi").unwrap_or(""))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let dmi_get = |k: &str| dmi.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    if dmi_get("sys_vendor") == Some("Microsoft Corporation")
        && dmi_get("product_name") == Some("Virtual Machine")
    {
        return Ok(answer(Vm, "microsoft", "dmi"));
    }
    for key in [
        "product_name",
        "sys_vendor",
        "board_vendor",
        "bios_vendor",
        "product_version",
    ] {
        if let Some(v) = dmi_get(key)
            && let Some((_, kind)) = DMI_VENDORS.iter().find(|(prefix, _)| v.starts_with(prefix))
        {
            return Ok(answer(Vm, kind, "dmi"));
        }
    }
    if first("hypervisor") == Some("xen") || has("/proc/xen") {
        return Ok(answer(Vm, "xen", "hypervisor"));
    }
    if let Some(vendor) = first("lscpu-hypervisor")
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
    {
        let kind = CPUID_VENDORS
            .iter()
            .find(|(prefix, _)| vendor.starts_with(prefix))
            .map_or("vm-other", |(_, k)| k);
        return Ok(answer(Vm, kind, "cpuid"));
    }
    if first("cpu-flags") == Some("hypervisor") {
        return Ok(answer(Vm, "vm-other", "cpuid"));
    }
    if let Some(guest) = sysctl("kern.vm_guest").filter(|g| *g != "none") {
        let kind = VM_GUESTS
            .iter()
            .find(|(g, _)| *g == guest)
            .map_or("vm-other", |(_, k)| k);
        return Ok(answer(Vm, kind, "sysctl"));
    }
    if sysctl("kern.hv_vmm_present") == Some("1") {
        return Ok(answer(Vm, "apple", "sysctl"));
    }
    Ok(answer(Host, "none", "no-evidence"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use VirtualizationRole::{Container, Host, Vm};

    fn role_kind(text: &str) -> (VirtualizationRole, String) {
        let v = parse(text).expect("parses");
        (v.role, v.kind)
    }

    #[test]
    fn systemd_detect_virt() {
        assert_eq!(role_kind("@@sdv\ndocker\n"), (Container, "docker".into()));
        assert_eq!(role_kind("@@sdv\nwsl\n"), (Container, "wsl".into()));
        assert_eq!(role_kind("@@sdv\nmicrosoft\n"), (Vm, "microsoft".into()));
        assert_eq!(role_kind("@@sdv\nnone\n"), (Host, "none".into()));
    }

    #[test]
    fn debian12_real() {
        let v = parse(include_str!(
            "../../../tests/fixtures/debian12/virtualization.txt"
        ))
        .expect("parses");
        assert_eq!((v.role, v.kind.as_str()), (Container, "docker"));
        assert_eq!(v.source, "systemd-detect-virt");
    }

    #[test]
    fn busybox_on_debian12_real_evidence() {
        // The same host without systemd-detect-virt: /.dockerenv decides.
        let v = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/virtualization.txt"
        ))
        .expect("parses");
        assert_eq!(
            (v.role, v.kind.as_str(), v.source.as_str()),
            (Container, "docker", "dockerenv")
        );
    }

    #[test]
    fn evidence_without_systemd() {
        let cases = [
            ("@@files\n@@container\ncontainer=lxc\n", (Container, "lxc")),
            (
                "@@files\n/run/.containerenv\n@@container\n",
                (Container, "podman"),
            ),
            ("@@files\n/proc/vz\n@@dmi\n", (Container, "openvz")),
            ("@@files\n/proc/vz\n/proc/bc\n@@dmi\n", (Host, "none")),
            (
                "@@files\n@@osrelease\n5.15.153.1-microsoft-standard-WSL2\n",
                (Container, "wsl"),
            ),
            (
                "@@files\n@@dmi\nsys_vendor=QEMU\nproduct_name=Standard PC (Q35 + ICH9, 2009)\n",
                (Vm, "qemu"),
            ),
            (
                "@@files\n@@dmi\nsys_vendor=Amazon EC2\nproduct_name=m5.large\n",
                (Vm, "amazon"),
            ),
            (
                "@@files\n@@dmi\nsys_vendor=VMware, Inc.\nproduct_name=VMware Virtual Platform\n",
                (Vm, "vmware"),
            ),
            (
                "@@files\n@@dmi\nsys_vendor=Microsoft Corporation\nproduct_name=Virtual Machine\n",
                (Vm, "microsoft"),
            ),
            (
                "@@files\n@@dmi\nsys_vendor=innotek GmbH\nproduct_name=VirtualBox\n",
                (Vm, "oracle"),
            ),
            (
                "@@files\n@@dmi\nsys_vendor=Dell Inc.\nproduct_name=PowerEdge R640\n@@cpu-flags\n",
                (Host, "none"),
            ),
            ("@@files\n@@hypervisor\nxen\n", (Vm, "xen")),
            (
                "@@files\n@@lscpu-hypervisor\nHypervisor vendor:               KVM\n@@cpu-flags\nhypervisor\n",
                (Vm, "kvm"),
            ),
            ("@@files\n@@cpu-flags\nhypervisor\n", (Vm, "vm-other")),
            (
                "@@files\n@@sysctl\nsecurity.jail.jailed: 1\nkern.vm_guest: kvm\n",
                (Container, "jail"),
            ),
            (
                "@@files\n@@sysctl\nsecurity.jail.jailed: 0\nkern.vm_guest: hv\n",
                (Vm, "microsoft"),
            ),
            (
                "@@files\n@@sysctl\nsecurity.jail.jailed: 0\nkern.vm_guest: none\n",
                (Host, "none"),
            ),
            ("@@files\n@@sysctl\nkern.hv_vmm_present: 1\n", (Vm, "apple")),
        ];
        for (text, (role, kind)) in cases {
            assert_eq!(role_kind(text), (role, kind.to_string()), "{text}");
        }
    }

    /// cgroup paths are not evidence (a cgroup v2 host has none).
    #[test]
    fn cgroup_paths_decide_nothing() {
        assert_eq!(
            role_kind("@@files\n@@container\n@@cgroup\n12:pids:/docker/abc\n"),
            (Host, "none".into())
        );
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        assert_eq!(role_kind("@@sdv\nBAD WORD\n"), (Host, "none".into()));
    }
}
