"""The bare-QEMU floor's machine, shared by the benchmarks that measure
against it (bench/boot.sh, bench/snapshot.sh): microvm's machine type and
acceleration, and under TCG the kernel hints microvm itself passes (the host
TSC frequency, which a TCG guest must not calibrate; tsc=reliable)."""


def host_tsc_khz():
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("cpu MHz"):
                return round(float(line.split(":")[1]) * 1000)
    return 0


def floor_machine(accel):
    """(kernel command line, QEMU's -accel and -cpu arguments) for `accel`."""
    append = "console=ttyS0 reboot=t panic=-1 quiet"
    if accel != "tcg":
        return append, ["-accel", "kvm", "-cpu", "host"]
    return (append + f" tsc_early_khz={host_tsc_khz()} tsc=reliable",
            ["-accel", "tcg,thread=multi", "-cpu", "max"])
