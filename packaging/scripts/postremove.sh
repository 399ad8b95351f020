#!/bin/sh
# Drover's post-remove script: the .deb's postrm and the .rpm's %postun.
# Tells a running systemd that the units are gone (or changed). It keeps the
# drover user and /var/lib/drover: the hub's Raft log and blobs and the
# agent's store are data, not package files.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
