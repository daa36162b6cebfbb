//! What `wdf.h` provides as macros and inline functions, which bindgen
//! cannot carry over: structure sizes, object attributes, context types
//! (`WDF_DECLARE_CONTEXT_TYPE`), and counted UTF-16 strings.

use core::ffi::c_void;
use core::mem::size_of;

use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, PCWDF_OBJECT_CONTEXT_TYPE_INFO,
    PFN_WDF_OBJECT_CONTEXT_CLEANUP, ULONG, UNICODE_STRING, WDF_OBJECT_ATTRIBUTES,
    WDF_OBJECT_CONTEXT_TYPE_INFO, WDFOBJECT, call_unsafe_wdf_function_binding,
};

/// `WDF_STRUCTURE_SIZE`: a structure's size as its `Size` field holds it.
pub const fn struct_size<T>() -> ULONG {
    let size = size_of::<T>();
    assert!(size <= ULONG::MAX as usize, "WDF structures are small");
    // The assertion above makes the cast lossless.
    #[allow(clippy::cast_possible_truncation)]
    let size = size as ULONG;
    size
}

/// The type information of a context type, as `WDF_DECLARE_CONTEXT_TYPE`
/// declares it: its own address is the type's identity (`UniqueType`).
#[repr(transparent)]
pub struct ContextType(WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: never written after initialisation; its pointers are to static
// data (the name, the value itself).
unsafe impl Sync for ContextType {}

impl ContextType {
    /// The information for a context of `size` bytes named `name`; `this`
    /// is the static being initialised (`UniqueType` points to itself).
    pub const fn new(name: &'static core::ffi::CStr, size: usize, this: &'static Self) -> Self {
        Self(WDF_OBJECT_CONTEXT_TYPE_INFO {
            Size: struct_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
            ContextName: name.as_ptr().cast(),
            ContextSize: size,
            UniqueType: core::ptr::from_ref(this).cast(),
            EvtDriverGetUniqueContextType: None,
        })
    }

    /// What `WDF_OBJECT_ATTRIBUTES::ContextTypeInfo` and
    /// `WdfObjectGetTypedContextWorker` take.
    pub const fn unique(&'static self) -> PCWDF_OBJECT_CONTEXT_TYPE_INFO {
        self.0.UniqueType
    }
}

/// `WDF_OBJECT_ATTRIBUTES_INIT` and `WDF_OBJECT_ATTRIBUTES_SET_CONTEXT_TYPE`:
/// attributes giving an object a context of `context`'s type, and a cleanup
/// callback.
pub fn attributes(
    context: &'static ContextType,
    cleanup: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
) -> WDF_OBJECT_ATTRIBUTES {
    WDF_OBJECT_ATTRIBUTES {
        Size: struct_size::<WDF_OBJECT_ATTRIBUTES>(),
        EvtCleanupCallback: cleanup,
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ContextTypeInfo: context.unique(),
        ..WDF_OBJECT_ATTRIBUTES::default()
    }
}

/// The context of type `ty` that the framework allocated (zeroed)
/// with `object`; null if `object` has none of that type.
///
/// # IRQL
/// `DISPATCH_LEVEL` or below.
///
/// # Safety
/// `object` is a live framework object.
pub unsafe fn context(object: WDFOBJECT, ty: &'static ContextType) -> *mut c_void {
    // SAFETY: a live object (the caller's contract); the type information
    // is static.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfObjectGetTypedContextWorker, object, ty.unique())
    }
}

/// `text` (ASCII) as UTF-16 code units, at compile time.
pub const fn wide<const N: usize>(text: &str) -> [u16; N] {
    let bytes = text.as_bytes();
    assert!(bytes.len() == N, "N is the text's length");
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        assert!(bytes[i].is_ascii(), "ASCII only");
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

/// A counted string over static UTF-16 text, for calls that only read it.
pub fn unicode(units: &'static [u16]) -> UNICODE_STRING {
    // The driver's strings are short constants.
    let bytes = u16::try_from(units.len() * 2).unwrap_or(0);
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: units.as_ptr().cast_mut(),
    }
}
