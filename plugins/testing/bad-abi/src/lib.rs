//! A plugin built for a future ABI major version: the host must refuse it
//! before calling anything in it.

use std::ffi::c_void;

use touchpilot_plugin::{ABI_MINOR, Buffer, HostTable, PluginTable, Slice};

unsafe extern "C" fn open(
    _host: *const HostTable,
    _config: Slice,
    _out: *mut *mut c_void,
) -> Buffer {
    panic!("the host called a plugin whose ABI it should have refused")
}

unsafe extern "C" fn call(_instance: *mut c_void, _op: Slice, _input: Slice) -> Buffer {
    panic!("the host called a plugin whose ABI it should have refused")
}

struct Table(PluginTable);
// SAFETY: immutable, and its slices point to statics.
unsafe impl Sync for Table {}

static TABLE: Table = Table(PluginTable {
    abi_major: 99,
    abi_minor: ABI_MINOR,
    size: std::mem::size_of::<PluginTable>(),
    name: Slice {
        ptr: b"bad-abi".as_ptr(),
        len: 7,
    },
    version: Slice {
        ptr: b"9.0.0".as_ptr(),
        len: 5,
    },
    capabilities: 0,
    open,
    call,
    free: touchpilot_plugin::export_free,
});

#[unsafe(no_mangle)]
pub extern "C" fn touchpilot_connector_v1() -> *const PluginTable {
    &TABLE.0
}
