#!/bin/sh
# Drover's post-install script: the .deb's postinst and the .rpm's %post.
# Tells a running systemd about the new or changed units. It enables,
# starts and restarts nothing: operators configure /etc/drover/*.yaml, then
# `systemctl enable --now` the units themselves, and restart a running one
# after an upgrade when they choose (one hub node at a time).
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
