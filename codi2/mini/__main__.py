from codi2.mini import main

raise SystemExit(main())
