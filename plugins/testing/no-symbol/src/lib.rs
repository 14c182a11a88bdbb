//! A shared library that is not a Touchpilot plugin: it lacks the entry
//! symbol, and the host must say so.

#[unsafe(no_mangle)]
pub extern "C" fn not_a_touchpilot_connector() -> u32 {
    7
}
