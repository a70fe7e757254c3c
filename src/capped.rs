//! Bounded reads of what a peer sends: a webhook's or an HTTP action's answer is read up to a
//! limit and no further, so a server that answers without end costs that many bytes, not
//! its answer's size. A leaf module: notification channels and remediation actions use it.

/// At most the first `max` bytes of `resp`'s body; the rest is not read (the connection is
/// let go with the response). A body that fails midway gives what came before.
pub async fn body(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// A server on 127.0.0.1 that answers one request with a 200 header and then `body`
    /// bytes (chunked), and tells how many bytes it could write.
    fn server(body: usize) -> (String, std::thread::JoinHandle<usize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            let chunk = vec![b'a'; 64 << 10];
            let mut sent = 0;
            while sent < body {
                let n = (body - sent).min(chunk.len());
                let head = format!("{n:x}\r\n");
                let ok = s.write_all(head.as_bytes()).is_ok()
                    && s.write_all(&chunk[..n]).is_ok()
                    && s.write_all(b"\r\n").is_ok();
                if !ok {
                    return sent;
                }
                sent += n;
            }
            let _ = s.write_all(b"0\r\n\r\n");
            sent
        });
        (url, handle)
    }

    async fn get(url: &str) -> reqwest::Response {
        crate::http_client().unwrap().get(url).send().await.unwrap()
    }

    #[tokio::test]
    async fn a_long_answer_is_read_to_the_limit_and_let_go() {
        // 256 MiB: long enough to tell, short enough to end if it were read whole.
        let (url, sent) = server(256 << 20);
        let resp = get(&url).await;
        let got = super::body(resp, 100_000).await;
        assert_eq!(got.len(), 100_000);
        assert!(got.iter().all(|b| *b == b'a'));
        // The server stops when the connection goes: it could write a little more than was
        // read (what the sockets buffer), never the whole answer.
        // (Waited for off the runtime, which closes the connection.)
        let sent = tokio::task::spawn_blocking(move || sent.join().unwrap())
            .await
            .unwrap();
        assert!(sent < 64 << 20, "{sent} bytes sent");
    }

    #[tokio::test]
    async fn a_short_answer_is_read_whole() {
        let (url, sent) = server(70_000);
        let resp = get(&url).await;
        assert_eq!(super::body(resp, 1 << 20).await.len(), 70_000);
        assert_eq!(sent.join().unwrap(), 70_000);
    }
}
