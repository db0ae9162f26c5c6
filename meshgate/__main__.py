from meshgate.cli.main import main

main()
