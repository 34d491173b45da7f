#!/usr/bin/env bash
# Everything the benchmarks need beyond scripts/setup.sh: the anchors (fpcalc from
# libchromaprint-tools, librosa via the dev extra), ffmpeg for real codecs, fluidsynth + the
# General MIDI soundfont for realistic MIDI renderings, and more real music: the game music of
# Debian's supertux-data and extremetuxracer-data (GPL), extracted without installing the games
# into benchmarks/out/music (about 50 Ogg tracks, 100 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system_deps.sh ffmpeg fluidsynth fluid-soundfont-gm libchromaprint-tools
bash scripts/setup.sh
music=benchmarks/out/music
if [ ! -f "$music/.done" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download supertux-data extremetuxracer-data >/dev/null)
  mkdir -p "$music"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
  find "$tmp/x" -path "*music*" -name "*.ogg" -size +300k | while read -r f; do
    pkg=$(echo "$f" | sed -E 's#.*/usr/share/games/([^/]+)/.*#\1#')
    cp "$f" "$music/${pkg}__$(basename "$f")"
  done
  rm -rf "$tmp"
  touch "$music/.done"
fi
echo "benchmark set-up done: $(ls "$music" | wc -l) extra tracks in $music"
