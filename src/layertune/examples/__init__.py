"""Small models that layertune ships as examples (built offline from data a package ships)."""
