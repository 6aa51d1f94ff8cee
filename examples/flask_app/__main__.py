from examples.flask_app.app import main

main()
