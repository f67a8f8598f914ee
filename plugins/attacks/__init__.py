"""Built-in attack plugins: each class registers itself (`class PGD(Attack, name="pgd")`), found through this
package's entry point exactly as a third party's are."""
