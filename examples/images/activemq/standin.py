"""A stand-in for ActiveMQ 5.14 (no JVM or broker can be had here): it listens on the broker's
ports, appends a line to its journal (/data/activemq/kahadb/db-1.log) at every start, like a
broker whose data folder matters to a cold backup, and logs to /var/log/activemq."""
import os
import signal
import socket
import sys
import threading
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
os.makedirs("/data/activemq/kahadb", exist_ok=True)
os.makedirs("/var/log/activemq", exist_ok=True)
with open("/data/activemq/kahadb/db-1.log", "a") as j:
    j.write(f"start {time.time():.3f}\n")
with open("/var/log/activemq/activemq.log", "a") as log:
    log.write("stand-in broker started\n")


def listen(port, answer):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        try:
            c.recv(4096)
            c.sendall(answer)
        except OSError:
            pass
        c.close()


page = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nActiveMQ stand-in\n"
for port, answer in ((61616, b"ActiveMQ"), (61613, b"CONNECTED\n\n\x00"), (8161, page)):
    threading.Thread(target=listen, args=(port, answer), daemon=True).start()
while True:
    time.sleep(3600)
