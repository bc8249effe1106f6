module example.invalid/fencelock/clients/go

go 1.19
