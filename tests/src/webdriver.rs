//! The few WebDriver calls the browser test makes (W3C WebDriver: JSON over HTTP), to
//! chromedriver on 127.0.0.1, through the harness's own HTTP client. A client crate would
//! pull a second ICU and `syn` features that nothing else in the workspace uses, and so
//! rebuild every proc macro and all above them for the test build alone.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::http::request_within;

/// W3C's key under which an element reference travels.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[derive(Debug)]
pub struct Session {
    port: u16,
    id: String,
}

#[derive(Debug)]
pub struct Element<'a> {
    session: &'a Session,
    id: String,
}

fn call(port: u16, method: &str, path: &str, body: &Value) -> Result<Value, String> {
    let body = if method == "POST" {
        body.to_string()
    } else {
        String::new()
    };
    // Starting a browser on a loaded machine takes a while.
    let (status, text) = request_within(port, method, path, "", &body, Duration::from_secs(90))
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let answer: Value =
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}: {text}"))?;
    if status != 200 {
        return Err(format!("{method} {path}: {status} {}", answer["value"]));
    }
    Ok(answer["value"].clone())
}

impl Session {
    /// A new browser session with `capabilities` (`alwaysMatch`).
    pub fn new(port: u16, capabilities: Value) -> Result<Self, String> {
        let value = call(
            port,
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": capabilities}}),
        )?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {value}"))?
            .to_owned();
        Ok(Self { port, id })
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        call(
            self.port,
            "POST",
            &format!("/session/{}{path}", self.id),
            &body,
        )
    }

    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.post("/url", json!({ "url": url })).map(drop)
    }

    /// Runs `script` in the page and returns what it returns.
    pub fn execute(&self, script: &str) -> Result<Value, String> {
        self.post("/execute/sync", json!({"script": script, "args": []}))
    }

    pub fn find(&self, css: &str) -> Result<Element<'_>, String> {
        let value = self.post("/element", json!({"using": "css selector", "value": css}))?;
        let id = value[ELEMENT]
            .as_str()
            .ok_or_else(|| format!("no element for {css}: {value}"))?
            .to_owned();
        Ok(Element { session: self, id })
    }

    /// Resizes the browser's window (the viewport follows, in headless Chromium).
    pub fn set_window_size(&self, width: u32, height: u32) -> Result<(), String> {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .map(drop)
    }

    /// The page as a PNG.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let path = format!("/session/{}/screenshot", self.id);
        let value = call(self.port, "GET", &path, &Value::Null)?;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot: {e}"))
    }

    /// Ends the session, closing the browser.
    pub fn close(self) -> Result<(), String> {
        let path = format!("/session/{}", self.id);
        call(self.port, "DELETE", &path, &Value::Null).map(drop)
    }
}

impl Element<'_> {
    fn post(&self, action: &str, body: Value) -> Result<Value, String> {
        self.session
            .post(&format!("/element/{}/{action}", self.id), body)
    }

    pub fn clear(&self) -> Result<(), String> {
        self.post("clear", json!({})).map(drop)
    }

    pub fn send_keys(&self, text: &str) -> Result<(), String> {
        self.post("value", json!({ "text": text })).map(drop)
    }

    pub fn click(&self) -> Result<(), String> {
        self.post("click", json!({})).map(drop)
    }
}
