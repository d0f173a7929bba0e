//! Issue 12: what the report says about a run beyond its counts: the messages behind the
//! error counts, what limited an open-loop run (`open_loop.limited_by`), the `warnings`
//! list, and compressed LLM streams. blast runs against loopback servers written here.

mod common;

use common::doc::*;

use common::{blast, blast_json, closed_port, Behaviour, TestServer};

/// The messages of one error kind in the result document.
fn messages(doc: &serde_json::Value, kind: &str) -> Vec<String> {
    at(doc, &format!("error_messages.{kind}"))
        .as_array()
        .unwrap_or_else(|| panic!("error_messages.{kind} is not a list:\n{doc:#}"))
        .iter()
        .map(|m| m.as_str().expect("a message is a string").to_string())
        .collect()
}

/// Errors say what they were, in the JSON and under Errors in the summary.
#[test]
fn connect_errors_say_the_connection_was_refused() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let (_, doc) = blast_json(&[&url, "--requests", "3", "--conns", "1"]);
    assert!(num(&doc, "errors.connect") > 0, "{doc:#}");
    let connect = messages(&doc, "connect");
    assert!(
        connect.len() == 1 && connect[0].to_lowercase().contains("refused"),
        "{connect:?}"
    );
    let out = blast(&[&url, "--requests", "3", "--conns", "1"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!("connect: {}", connect[0])),
        "{summary}"
    );
}

#[test]
fn parse_errors_say_what_was_wrong() {
    let server = TestServer::start(Behaviour::keep_alive().garbage());
    let (_, doc) = blast_json(&[&server.url("/"), "--conns", "2", "--requests", "6"]);
    assert!(num(&doc, "errors.parse") > 0, "{doc:#}");
    let parse = messages(&doc, "parse");
    assert!(!parse.is_empty() && parse.len() <= 4, "{parse:?}");
    assert!(parse.iter().all(|m| m.contains("response")), "{parse:?}");
    // Kinds that did not occur have no entry.
    assert!(
        at(&doc, "error_messages").get("timeout").is_none(),
        "{doc:#}"
    );
}
