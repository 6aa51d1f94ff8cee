from examples.aiohttp_app.app import main

main()
