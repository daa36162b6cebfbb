//! The loopback echo server used without `--remote`.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

/// Starts an echo server on `127.0.0.1` and returns its address.
///
/// It listens on an ephemeral port and serves each connection on its own
/// thread: the connection gets back what it sends and ends when the client
/// ends its side. The server lives as long as the process.
///
/// # Errors
/// Binding or reading the bound address failed.
pub fn start() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || echo(stream));
        }
    });
    Ok(address)
}

fn echo(mut stream: TcpStream) {
    let mut buffer = [0_u8; 16 * 1024];
    // Until the client ends its side (0) or the connection fails.
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        if stream.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    // Dropping the stream closes it: a FIN after the client's.
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Shutdown;

    #[test]
    fn echoes_until_the_client_ends() {
        let address = start().unwrap();
        assert!(address.ip().is_loopback());
        // Three connections at once, each served on its own thread: the
        // last one ends first.
        let mut clients: Vec<_> = (0..3)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        for (i, client) in clients.iter_mut().enumerate().rev() {
            client
                .write_all(format!("hello {i}\r\n").as_bytes())
                .unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        }
        for (i, mut client) in clients.into_iter().enumerate() {
            let message = format!("hello {i}\r\n");
            let mut reply = String::new();
            // read_to_string returns only once the server has closed too.
            client.read_to_string(&mut reply).unwrap();
            assert_eq!(reply, message);
        }
    }
}
