from deckstream.cli import main

main()
