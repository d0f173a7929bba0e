//! Reading blast's result document and its exit, shared by every integration test.

use std::process::Output;

use serde_json::Value;

/// The value at a dotted path (`requests.completed`, `status.503`); panics if missing.
pub fn at<'a>(doc: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(doc, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("result has no `{path}` (missing `{key}`):\n{doc:#}"))
    })
}

pub fn num(doc: &Value, path: &str) -> u64 {
    at(doc, path)
        .as_u64()
        .unwrap_or_else(|| panic!("`{path}` is not an unsigned integer:\n{doc:#}"))
}

pub fn float(doc: &Value, path: &str) -> f64 {
    at(doc, path)
        .as_f64()
        .unwrap_or_else(|| panic!("`{path}` is not a number:\n{doc:#}"))
}

pub fn flag(doc: &Value, path: &str) -> bool {
    at(doc, path)
        .as_bool()
        .unwrap_or_else(|| panic!("`{path}` is not a boolean:\n{doc:#}"))
}

pub fn text<'a>(doc: &'a Value, path: &str) -> &'a str {
    at(doc, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string:\n{doc:#}"))
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// blast exited with `code`, and did not panic on the way.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}, stderr:\n{}",
        out.status,
        stderr_of(out)
    );
    assert!(!stderr_of(out).contains("panicked"), "{}", stderr_of(out));
}

/// Every error counter is zero, whatever kinds the document lists.
pub fn assert_no_errors(doc: &Value) {
    let errors = at(doc, "errors").as_object().expect("errors is an object");
    for (kind, n) in errors {
        assert_eq!(n.as_u64(), Some(0), "errors.{kind}:\n{doc:#}");
    }
    assert_eq!(num(doc, "requests.failed"), 0, "requests.failed");
}

/// Every request started is accounted for.
pub fn assert_balanced(doc: &Value) {
    let ended =
        num(doc, "requests.completed") + num(doc, "requests.failed") + num(doc, "requests.cut_off");
    assert_eq!(
        num(doc, "requests.sent"),
        ended,
        "sent != completed + failed + cut_off:\n{:#}",
        at(doc, "requests")
    );
}
