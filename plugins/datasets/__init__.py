"""Built-in dataset plugins: each class registers itself (`class Digits(DataSource, name="digits")`), found through this
package's entry point exactly as a third party's are."""
