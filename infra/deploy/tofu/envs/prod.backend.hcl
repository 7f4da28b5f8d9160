bucket         = "spacemusic-prod-tofu-state"
key            = "spacemusic/prod.tfstate"
region         = "eu-west-1"
dynamodb_table = "spacemusic-prod-tofu-locks"
encrypt        = true
