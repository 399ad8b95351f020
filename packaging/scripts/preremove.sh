#!/bin/sh
# Drover's pre-remove script: the .deb's prerm and the .rpm's %preun.
# On removal (.deb: "remove"; .rpm: 0 packages left) it stops and disables
# both units; on an upgrade (.deb: "upgrade"; .rpm: 1) it leaves them running.
set -e

case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl stop drover-hub.service drover-agent.service >/dev/null 2>&1 || true
	fi
	if command -v systemctl >/dev/null 2>&1; then
		systemctl --no-reload disable drover-hub.service drover-agent.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
