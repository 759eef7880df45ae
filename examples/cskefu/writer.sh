#!/usr/bin/env bash
# The app writer: posts messages to the contact-center stand-in (each one transaction of two rows
# and an upload) until stopped, printing a dot per message. Usage: writer.sh [PORT] [COUNT]
port=${1:-8035}
count=${2:-0}
n=0
while [ "$count" = 0 ] || [ "$n" -lt "$count" ]; do
    if curl -fsS -X POST "http://127.0.0.1:$port/api/messages" >/dev/null 2>&1; then
        n=$((n + 1)); printf .
    else
        sleep 0.2
    fi
done
echo " $n messages"
