from examples.batch_upload.app import main

main()
