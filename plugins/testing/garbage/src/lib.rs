//! A plugin with a correct table whose calls answer bytes that are not
//! JSON, written against the raw ABI (the macro cannot produce garbage).

use std::ffi::c_void;

use touchpilot_plugin::{ABI_MAJOR, ABI_MINOR, Buffer, HostTable, PluginTable, Slice, caps};

unsafe extern "C" fn open(
    _host: *const HostTable,
    _config: Slice,
    out: *mut *mut c_void,
) -> Buffer {
    // SAFETY: the host passes a writable out-pointer.
    unsafe { *out = std::ptr::null_mut() };
    Buffer::from_vec(br#"{"ok":null}"#.to_vec())
}

unsafe extern "C" fn call(_instance: *mut c_void, _op: Slice, _input: Slice) -> Buffer {
    Buffer::from_vec(b"\xff{not json".to_vec())
}

struct Table(PluginTable);
// SAFETY: immutable, and its slices point to statics.
unsafe impl Sync for Table {}

static TABLE: Table = Table(PluginTable {
    abi_major: ABI_MAJOR,
    abi_minor: ABI_MINOR,
    size: std::mem::size_of::<PluginTable>(),
    name: Slice {
        ptr: b"garbage".as_ptr(),
        len: 7,
    },
    version: Slice {
        ptr: b"0.1.0".as_ptr(),
        len: 5,
    },
    capabilities: caps::ACTIONS,
    open,
    call,
    free: touchpilot_plugin::export_free,
});

#[unsafe(no_mangle)]
pub extern "C" fn touchpilot_connector_v1() -> *const PluginTable {
    &TABLE.0
}
