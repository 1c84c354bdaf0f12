"""``python -m geli_lib.alignment.rl`` (and ``accelerate launch -m geli_lib.alignment.rl``)."""

from geli_lib.alignment.rl.generations import main

raise SystemExit(main())
