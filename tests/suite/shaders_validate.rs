//! Every WGSL family parses and validates with naga, without a device.

use qforge::gpu::kernels::Family;

#[test]
fn every_shader_validates_with_naga() {
    for family in Family::ALL {
        let module = naga::front::wgsl::parse_str(family.source()).unwrap_or_else(|e| {
            panic!(
                "{}.wgsl: {}",
                family.name(),
                e.emit_to_string(family.source())
            )
        });
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            if family.needs_subgroups() {
                naga::valid::Capabilities::SUBGROUP
            } else {
                naga::valid::Capabilities::empty()
            },
        );
        validator.validate(&module).unwrap_or_else(|e| {
            panic!(
                "{}.wgsl: {}",
                family.name(),
                e.emit_to_string(family.source())
            )
        });
    }
}

#[test]
fn shader_table_covers_every_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    let mut table: Vec<String> = Family::ALL
        .iter()
        .map(|f| format!("{}.wgsl", f.name()))
        .chain(Family::SHARED.iter().map(|s| s.to_string()))
        .collect();
    table.sort();
    assert_eq!(
        files, table,
        "every shaders/*.wgsl must be in the kernel table"
    );
}
