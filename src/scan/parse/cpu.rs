//! `cpu` step: the processor model and how many logical CPUs, sockets,
//! cores and threads the host has.

use std::collections::HashSet;

use super::{ParseError, lines, named_sections, parse_u64, truncate_chars};
use crate::model::facts::Cpu;

/// Prints `@@cpuinfo` (the topology and model lines of `/proc/cpuinfo`:
/// Linux, busybox), `@@lscpu` (util-linux) only where cpuinfo lacks the
/// model or the topology (ARM, some hypervisors: lscpu decodes more, but it
/// costs a quick scan several milliseconds), and, only where neither
/// exists, `@@sysctl` (`name: value` lines of `hw.model`, `hw.ncpu`,
/// the SMP topology on FreeBSD and the package/core counts on macOS).
/// Exits 127 when nothing answered.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
found=
topology=
if [ -r /proc/cpuinfo ] && out=$(grep -E '^(processor|model name|physical id|core id|cpu cores|siblings|Processor|cpu model|cpu|Hardware|Model)[[:space:]]*:' /proc/cpuinfo 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@cpuinfo
  printf '%s\n' "$out" | head -n 50000
  found=1
  case $out in
    *"model name"*"physical id"*"cpu cores"*) topology=1 ;;
  esac
fi
if [ -z "$topology" ] && command -v lscpu >/dev/null 2>&1 && out=$(lscpu 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@lscpu
  printf '%s\n' "$out" | head -n 200
  found=1
fi
if [ -z "$found" ] && command -v sysctl >/dev/null 2>&1; then
  echo @@sysctl
  for k in machdep.cpu.brand_string hw.model hw.ncpu hw.packages hw.physicalcpu hw.logicalcpu \
      kern.smp.cpus kern.smp.cores kern.smp.threads_per_core; do
    sysctl "$k" 2>/dev/null </dev/null
  done
  found=1
fi
[ -n "$found" ] || exit 127
exit 0
"#;

const MAX_MODEL: usize = 256;
const MAX_CPUS: u32 = 1 << 20;

/// lscpu first, each field it lacks from `/proc/cpuinfo`, then sysctl.
/// Err when no source gave a CPU count.
pub fn parse(stdout: &str) -> Result<Cpu, ParseError> {
    let mut cpu = Cpu::default();
    let secs = named_sections(stdout);
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    if let Some(body) = get("lscpu") {
        lscpu(body, &mut cpu);
    }
    if let Some(body) = get("cpuinfo") {
        fill(&mut cpu, cpuinfo(body));
    }
    if let Some(body) = get("sysctl") {
        fill(&mut cpu, sysctl(body));
    }
    if cpu.logical_cpus == 0 {
        return Err(ParseError::new(
            "no CPU count (looked at lscpu, /proc/cpuinfo, sysctl hw.ncpu)",
        ));
    }
    Ok(cpu)
}

fn fill(cpu: &mut Cpu, other: Cpu) {
    if cpu.model_name.is_empty() {
        cpu.model_name = other.model_name;
    }
    for (mine, theirs) in [
        (&mut cpu.logical_cpus, other.logical_cpus),
        (&mut cpu.sockets, other.sockets),
        (&mut cpu.cores_per_socket, other.cores_per_socket),
        (&mut cpu.threads_per_core, other.threads_per_core),
    ] {
        if *mine == 0 {
            *mine = theirs;
        }
    }
}

fn count(v: &str) -> u32 {
    parse_u64(v.trim())
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= MAX_CPUS)
        .unwrap_or(0)
}

fn model(v: &str) -> String {
    truncate_chars(
        &v.split_whitespace().collect::<Vec<_>>().join(" "),
        MAX_MODEL,
    )
}

/// `key: value` with any spacing; the first occurrence of each key.
fn key_values(body: &str) -> impl Iterator<Item = (&str, &str)> {
    lines(body).filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim(), v.trim())))
}

/// `lscpu`: `CPU(s):`, `Model name:`, `Socket(s):`, `Core(s) per socket:`
/// (or `per cluster` on ARM), `Thread(s) per core:`.
fn lscpu(body: &str, cpu: &mut Cpu) {
    for (k, v) in key_values(body) {
        let slot = match k {
            "CPU(s)" => &mut cpu.logical_cpus,
            "Socket(s)" => &mut cpu.sockets,
            "Core(s) per socket" | "Core(s) per cluster" => &mut cpu.cores_per_socket,
            "Thread(s) per core" => &mut cpu.threads_per_core,
            "Model name" if cpu.model_name.is_empty() && v != "-" => {
                cpu.model_name = model(v);
                continue;
            }
            _ => continue,
        };
        if *slot == 0 {
            *slot = count(v);
        }
    }
}

/// `/proc/cpuinfo`: one `processor` line per logical CPU; x86 adds
/// `physical id`, `cpu cores` and `siblings`; ARM, MIPS and POWER name the
/// model `Processor`, `cpu model` or `cpu`.
fn cpuinfo(body: &str) -> Cpu {
    let mut cpu = Cpu::default();
    let mut logical = 0u32;
    let mut packages: HashSet<String> = HashSet::new();
    let mut cores = 0;
    let mut siblings = 0;
    let mut fallback_model = String::new();
    for (k, v) in key_values(body) {
        match k {
            "processor" if parse_u64(v).is_some() => logical = logical.saturating_add(1),
            "model name" if cpu.model_name.is_empty() => cpu.model_name = model(v),
            "physical id" if packages.len() < 4096 => {
                packages.insert(truncate_chars(v, 16));
            }
            "cpu cores" if cores == 0 => cores = count(v),
            "siblings" if siblings == 0 => siblings = count(v),
            // Old ARM kernels: `Processor : ARMv7 Processor rev 4 (v7l)`.
            "Processor" | "cpu model" | "cpu"
                if fallback_model.is_empty() && parse_u64(v).is_none() =>
            {
                fallback_model = model(v);
            }
            "Hardware" | "Model" if fallback_model.is_empty() => fallback_model = model(v),
            _ => {}
        }
    }
    if cpu.model_name.is_empty() {
        cpu.model_name = fallback_model;
    }
    cpu.logical_cpus = logical.min(MAX_CPUS);
    cpu.sockets = u32::try_from(packages.len()).unwrap_or(0);
    cpu.cores_per_socket = cores;
    if cores > 0 && siblings >= cores {
        cpu.threads_per_core = siblings / cores;
    }
    cpu
}

/// BSD `sysctl name` lines: `hw.ncpu: 8`.
fn sysctl(body: &str) -> Cpu {
    let mut cpu = Cpu::default();
    let mut hw_model = String::new();
    let (mut packages, mut physical, mut logical, mut smp_cores, mut smp_threads) = (0, 0, 0, 0, 0);
    for (k, v) in key_values(body) {
        match k {
            "machdep.cpu.brand_string" => cpu.model_name = model(v),
            "hw.model" => hw_model = model(v),
            "hw.ncpu" => cpu.logical_cpus = count(v),
            "hw.logicalcpu" => logical = count(v),
            "hw.packages" => packages = count(v),
            "hw.physicalcpu" => physical = count(v),
            "kern.smp.cores" => smp_cores = count(v),
            "kern.smp.threads_per_core" => smp_threads = count(v),
            _ => {}
        }
    }
    // macOS's hw.model is the machine (`MacBookPro18,1`), not the CPU.
    if cpu.model_name.is_empty() {
        cpu.model_name = hw_model;
    }
    if cpu.logical_cpus == 0 {
        cpu.logical_cpus = logical;
    }
    if packages > 0 && physical > 0 {
        cpu.sockets = packages;
        cpu.cores_per_socket = physical / packages;
        cpu.threads_per_core = logical.max(cpu.logical_cpus) / physical;
    } else if smp_cores > 0 {
        // FreeBSD counts cores over all packages and does not say how many
        // packages there are: sockets and cores per socket stay unknown.
        cpu.threads_per_core = smp_threads;
    }
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Cpu {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        parse(&text).expect("parses")
    }

    fn shape(c: &Cpu) -> (u32, u32, u32, u32) {
        (
            c.logical_cpus,
            c.sockets,
            c.cores_per_socket,
            c.threads_per_core,
        )
    }

    #[test]
    fn debian12_real() {
        // x86 cpuinfo has the topology: no lscpu.
        let c = fixture("debian12/cpu.txt");
        assert_eq!(shape(&c), (2, 1, 2, 1));
        assert_eq!(c.model_name, "AMD EPYC");
        // The same host through lscpu (what ARM hosts and some VMs run).
        assert_eq!(fixture("debian12/cpu-lscpu.txt"), c);
    }

    #[test]
    fn busybox_on_debian12_real() {
        // No lscpu: /proc/cpuinfo alone gives the same answer.
        let c = fixture("busybox-on-debian12/cpu.txt");
        assert_eq!(shape(&c), (2, 1, 2, 1));
        assert_eq!(c.model_name, "AMD EPYC");
    }

    #[test]
    fn two_socket_xeon_with_hyperthreads_documented() {
        let c = fixture("xeon-2s/cpu.documented.txt");
        assert_eq!(shape(&c), (8, 2, 2, 2));
        assert_eq!(c.model_name, "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz");
    }

    #[test]
    fn arm_documented() {
        let c = fixture("raspbian/cpu.documented.txt");
        assert_eq!(shape(&c), (4, 0, 0, 0));
        assert_eq!(c.model_name, "ARMv7 Processor rev 4 (v7l)");
    }

    #[test]
    fn bsd_documented() {
        let c = fixture("freebsd14/cpu.documented.txt");
        assert_eq!(shape(&c), (8, 0, 0, 2));
        assert_eq!(c.model_name, "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz");
        let m = fixture("macos14/cpu.documented.txt");
        assert_eq!(shape(&m), (10, 1, 10, 1));
        assert_eq!(m.model_name, "Apple M1 Pro");
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        assert!(parse("@@cpuinfo\nprocessor : x\n").is_err());
        assert!(parse("@@lscpu\nCPU(s): 99999999999999999999\n").is_err());
    }
}
