//! Scripts compiled once to QuickJS bytecode and loaded into each fresh context, through the
//! C API that rquickjs exposes for modules only: a module is strict, and Botpress runs action
//! and hook files as sloppy scripts, so they are compiled as global code instead.

use rquickjs::{qjs, Ctx, Function, Value};
use std::ffi::CString;

/// Compiles `source` (global code, not strict) named `filename` without running it.
pub fn compile(ctx: &Ctx, source: &str, filename: &str) -> rquickjs::Result<Vec<u8>> {
    let src = CString::new(source)?;
    let name = CString::new(filename)?;
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context `ctx` borrows; the strings outlive the call; the
    // compiled object is freed here on every path, and the buffer QuickJS allocated for its
    // bytes is copied, then freed with the context's allocator.
    unsafe {
        let object = qjs::JS_Eval(
            raw,
            src.as_ptr(),
            source.len() as _,
            name.as_ptr(),
            (qjs::JS_EVAL_TYPE_GLOBAL | qjs::JS_EVAL_FLAG_COMPILE_ONLY) as i32,
        );
        if qjs::JS_IsException(object) {
            return Err(rquickjs::Error::Exception);
        }
        let mut len = 0;
        let buf = qjs::JS_WriteObject(raw, &mut len, object, qjs::JS_WRITE_OBJ_BYTECODE as i32);
        qjs::JS_FreeValue(raw, object);
        if buf.is_null() {
            return Err(rquickjs::Error::Exception);
        }
        let bytes = std::slice::from_raw_parts(buf, len as usize).to_vec();
        qjs::js_free(raw, buf as _);
        Ok(bytes)
    }
}

/// Runs bytecode from [`compile`] in `ctx`: the wrapped script's function.
pub fn load<'js>(ctx: &Ctx<'js>, bytes: &[u8]) -> rquickjs::Result<Function<'js>> {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: the bytes were written by this process's QuickJS from a compiled script
    // (`compile`), so they are valid bytecode for this engine; without ROM data the object
    // read owns a copy of what it needs. JS_EvalFunction takes ownership of the object.
    let value = unsafe {
        let object = qjs::JS_ReadObject(
            raw,
            bytes.as_ptr(),
            bytes.len() as _,
            qjs::JS_READ_OBJ_BYTECODE as i32,
        );
        if qjs::JS_IsException(object) {
            return Err(rquickjs::Error::Exception);
        }
        let result = qjs::JS_EvalFunction(raw, object);
        if qjs::JS_IsException(result) {
            return Err(rquickjs::Error::Exception);
        }
        Value::from_raw(ctx.clone(), result)
    };
    Function::from_value(value)
}
