//! `qforge devices`: the adapters, the one qforge picks, and (with --check) every kernel built.

use qforge::gpu::{list_adapters, pick_adapter, Gpu};

/// Arguments of `qforge devices`.
#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    /// Also create a device on the chosen adapter and build every kernel.
    #[arg(long)]
    check: bool,
}

/// Runs `qforge devices`.
pub fn main(a: DevicesArgs) -> qforge::Result<()> {
    let adapters = list_adapters();
    let filter = std::env::var("WGPU_ADAPTER_NAME")
        .ok()
        .filter(|s| !s.is_empty());
    let low_power = matches!(
        std::env::var("WGPU_POWER_PREF").as_deref(),
        Ok("low") | Ok("low-power")
    );
    let chosen = pick_adapter(&adapters, filter.as_deref(), low_power);
    if adapters.is_empty() {
        println!("no adapters found");
    }
    for (i, a) in adapters.iter().enumerate() {
        let mark = if Some(i) == chosen { "*" } else { " " };
        println!(
            "{mark} [{i}] {} ({:?}, {:?})",
            a.name, a.backend, a.device_type
        );
        println!("      driver: {} {}", a.driver, a.driver_info);
        println!(
            "      max storage binding {} MiB, max buffer {} MiB, {} workgroups/dim, {} invocations/workgroup, {} KiB workgroup memory, {} storage buffers/shader",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroups_per_dim,
            a.max_invocations,
            a.workgroup_storage >> 10,
            a.storage_buffers
        );
        println!(
            "      subgroups: {}, timestamps: {}, f16: {}",
            a.subgroups, a.timestamps, a.f16
        );
    }
    if let Some(i) = chosen {
        let a = &adapters[i];
        let soft = if a.is_software() {
            " (software: correct but slow)"
        } else {
            ""
        };
        println!("qforge uses [{i}] {}{soft}", a.name);
    }
    if a.check || chosen.is_none() {
        let gpu = Gpu::new()?;
        let mut skipped = Vec::new();
        for family in qforge::gpu::kernels::Family::ALL {
            if family.needs_subgroups() && !gpu.adapter().subgroups {
                skipped.push(family.name());
                continue;
            }
            gpu.check_family(family)?;
        }
        let skipped = match skipped.is_empty() {
            true => String::new(),
            false => format!(" ({} not used: no subgroups)", skipped.join(", ")),
        };
        println!(
            "device created on {}; every kernel family it uses builds{skipped}",
            gpu.describe()
        );
    }
    Ok(())
}
