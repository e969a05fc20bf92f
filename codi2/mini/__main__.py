from codi2.mini import main

if __name__ == "__main__":
    raise SystemExit(main())
